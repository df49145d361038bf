//! Golden tests: every `tests/golden/pass-*.conf` and `fail-*.conf` goes
//! through `vmconf::check`, the function behind `vmd -n`, and its output must
//! equal the `.out` file beside it byte for byte. Passing files are checked
//! with `-v`, so the expected output contains the normalized dump, and that dump
//! must load again to the same text.
//!
//! A first line `# defines: a=b c=d` passes `-D` definitions. In expected
//! output, `$CRATE` stands for this crate's directory, where the fixture
//! images live. `VMCONF_BLESS=1 cargo test -p vmconf --test golden` rewrites
//! the `.out` files; review the diff before committing it.

use std::fs;
use std::path::{Path, PathBuf};

const GOLDEN_DIR: &str = "tests/golden";

fn crate_dir() -> String {
    let dir = fs::canonicalize(env!("CARGO_MANIFEST_DIR")).expect("the crate directory exists");
    dir.display().to_string()
}

fn golden_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(GOLDEN_DIR)
        .expect("tests/golden exists; cargo runs tests from the crate directory")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "conf"))
        .collect();
    files.sort();
    files
}

fn defines_of(path: &Path) -> Vec<String> {
    let text = fs::read(path).expect("golden file is readable");
    let first_line = text.split(|byte| *byte == b'\n').next().unwrap_or_default();
    let first_line = String::from_utf8_lossy(first_line);
    match first_line.strip_prefix("# defines:") {
        Some(list) => list.split_whitespace().map(str::to_owned).collect(),
        None => Vec::new(),
    }
}

fn is_pass(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    assert!(
        name.starts_with("pass-") || name.starts_with("fail-"),
        "{name}: golden files are named pass-*.conf or fail-*.conf"
    );
    name.starts_with("pass-")
}

/// Loads the dump of a passing file from a temporary file and returns the
/// dump of the result.
fn reload_dump(name: &str, dump: &str) -> String {
    let path = std::env::temp_dir().join(format!("vmconf-golden-{}-{name}", std::process::id()));
    fs::write(&path, dump).expect("temporary directory is writable");
    let result = vmconf::load(Some(&path), &[]);
    fs::remove_file(&path).expect("temporary file can be removed");
    match result {
        Ok(loaded) => loaded.config.to_string(),
        Err(errors) => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!(
                "{name}: the dump does not load again:\n{}\n{dump}",
                errors.join("\n")
            )
        }
    }
}

#[test]
fn golden_files_match_expected_output() {
    let crate_dir = crate_dir();
    let bless = std::env::var_os("VMCONF_BLESS").is_some();
    let files = golden_files();
    assert!(files.len() >= 60, "only {} golden files", files.len());

    let mut failures = Vec::new();
    for path in &files {
        let pass = is_pass(path);
        let report = vmconf::check(Some(path), &defines_of(path), pass);
        let actual = report.text.replace(&crate_dir, "$CRATE");
        let expected_path = path.with_extension("out");
        if bless {
            fs::write(&expected_path, &actual).expect("expected output is writable");
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{}: output differs\n--- expected\n{expected}--- actual\n{actual}",
                path.display()
            ));
        }
        if report.ok != pass {
            failures.push(format!(
                "{}: ok is {}, expected {pass}",
                path.display(),
                report.ok
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn passing_dumps_load_to_same_dump() {
    for path in golden_files().iter().filter(|path| is_pass(path)) {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        let loaded = vmconf::load(Some(path), &defines_of(path))
            .unwrap_or_else(|_| panic!("{name} is a passing file but does not load"));
        let dump = loaded.config.to_string();
        assert_eq!(
            reload_dump(name, &dump),
            dump,
            "{name}: dump changes when loaded again"
        );
    }
}

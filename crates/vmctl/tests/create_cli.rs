//! `vmctl create` through the real binary: exit status and exactly what it
//! prints.

use std::path::PathBuf;
use std::process::Command;

/// Runs vmctl in `directory` and returns (exit status, stdout, stderr).
fn vmctl(directory: &PathBuf, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_vmctl"))
        .args(args)
        .current_dir(directory)
        .output()
        .expect("vmctl runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("vmctl-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap();
    path
}

#[test]
fn create_prints_openbsd_messages() {
    let directory = scratch("messages");
    let cases: [(&[&str], i32, &str); 7] = [
        (
            &["create", "-s", "10G", "a.qcow2"],
            0,
            "vmctl: qcow2 imagefile created\n",
        ),
        (
            &["create", "-b", "a.qcow2", "b.qcow2"],
            0,
            "vmctl: qcow2 imagefile created\n",
        ),
        (
            &["create", "-s", "1.5M", "c.raw"],
            0,
            "vmctl: disk size rounded to 1.0M\nvmctl: raw imagefile created\n",
        ),
        (
            &["create", "-s", "1M", "c.raw"],
            1,
            "vmctl: create imagefile operation failed: File exists\n",
        ),
        (
            &["create", "d.raw"],
            1,
            "could not create d.raw: missing size argument\nusage:\tvmctl [-v] create [-b base | -i disk] [-s size] disk\n",
        ),
        (
            &["create", "-b", "a.qcow2", "-i", "c.raw", "e.raw"],
            1,
            "vmctl: conflicting -b and -i arguments\n",
        ),
        (
            &["create", "-s", "512K", "f.raw"],
            1,
            "vmctl: disk size must be at least 1MB\n",
        ),
    ];
    for (args, status, stderr) in cases {
        let (actual_status, stdout, actual_stderr) = vmctl(&directory, args);

        assert_eq!(actual_status, status, "{args:?}: {actual_stderr}");
        assert_eq!(stdout, "", "{args:?}");
        assert_eq!(actual_stderr, stderr, "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn create_enforces_chain_limit() {
    let directory = scratch("chain");
    assert_eq!(vmctl(&directory, &["create", "-s", "8M", "1.qcow2"]).0, 0);
    for (base, image) in [
        ("1.qcow2", "2.qcow2"),
        ("2.qcow2", "3.qcow2"),
        ("3.qcow2", "4.qcow2"),
    ] {
        assert_eq!(
            vmctl(&directory, &["create", "-b", base, image]).0,
            0,
            "{image}"
        );
    }

    let (status, _, stderr) = vmctl(&directory, &["create", "-b", "4.qcow2", "5.qcow2"]);

    assert_eq!(status, 1);
    assert_eq!(
        stderr,
        "vmctl: disk 5.qcow2: backing chain is longer than 4 files\n"
    );
    assert!(!directory.join("5.qcow2").exists());
    let _ = std::fs::remove_dir_all(&directory);
}

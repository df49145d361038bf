//! Helpers shared by the disk integration tests: scratch directories,
//! qemu-img and qemu-io wrappers, and a seeded random number generator.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory under the system temporary directory, removed on drop.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates a fresh, empty directory named after `name`.
    pub fn new(name: &str) -> ScratchDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("disk-test-{name}-{}-{unique}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temporary directory is writable");
        ScratchDir { path }
    }

    /// Returns the path of `name` inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Returns the directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Output of a finished qemu tool.
pub struct ToolOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program` with `args` and returns its exit status and output.
/// Panics if the program cannot be started: the tests need qemu-utils.
pub fn run_tool(program: &str, args: &[&str]) -> ToolOutput {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program} (install qemu-utils): {error}"));
    ToolOutput {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs qemu-img and panics with its output unless it exits 0.
pub fn qemu_img(args: &[&str]) -> String {
    let output = run_tool("qemu-img", args);
    assert_eq!(
        output.status, 0,
        "qemu-img {args:?} failed:\n{}{}",
        output.stdout, output.stderr
    );
    output.stdout
}

/// Runs qemu-io commands on an image (opened read-write, format given) and
/// panics unless every command succeeded.
pub fn qemu_io(image: &Path, format: &str, commands: &[String]) {
    let mut args = vec!["-f".to_string(), format.to_string()];
    for command in commands {
        args.push("-c".to_string());
        args.push(command.clone());
    }
    args.push(image.to_str().expect("test paths are UTF-8").to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run_tool("qemu-io", &args);
    let failed = output.status != 0
        || output.stdout.contains("error")
        || output.stdout.contains("failed")
        || output.stderr.contains("error");
    assert!(
        !failed,
        "qemu-io {args:?} failed:\n{}{}",
        output.stdout, output.stderr
    );
}

/// Result of `qemu-img check`.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// No errors and no leaks (exit status 0).
    Clean,
    /// Leaked clusters only (exit status 3).
    LeaksOnly,
    /// Corruption or a failed check, with the output.
    Errors(String),
}

/// Runs `qemu-img check` on a qcow2 image.
pub fn qemu_img_check(image: &Path) -> CheckResult {
    let path = image.to_str().expect("test paths are UTF-8");
    let output = run_tool("qemu-img", &["check", "-f", "qcow2", path]);
    match output.status {
        0 => CheckResult::Clean,
        3 => CheckResult::LeaksOnly,
        _ => CheckResult::Errors(format!("{}{}", output.stdout, output.stderr)),
    }
}

/// xorshift64* generator: small, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    /// Creates a generator; the same seed gives the same sequence.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Returns the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Returns a number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Returns the first offset where `actual` and `expected` differ.
pub fn first_difference(actual: &[u8], expected: &[u8]) -> Option<usize> {
    actual
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .or_else(|| (actual.len() != expected.len()).then(|| actual.len().min(expected.len())))
}

/// Converts a path to &str for tool arguments.
pub fn text(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

//! Throughput of the disk crate next to `qemu-img bench` (QEMU's block
//! layer) on the same images and the same request pattern.
//!
//! Run from the workspace root:
//!
//!     cargo run --release -p disk-bench -- [--dir DIR] [--repeat N] [--filter TEXT]
//!
//! For each image kind (raw, qcow2 preallocated, qcow2 fresh) and pattern
//! (4 KiB scattered reads and writes, 1 MiB sequential reads and writes)
//! it runs `qemu-img bench` with its defaults (64 requests in flight,
//! thread-pool AIO, page cache) and with one request in flight. Then it
//! sends the same offsets through `disk::Disk` from one thread and from two.
//! Each run gets a fresh copy of the image, so allocating writes start from
//! the same state. It prints a Markdown table of median MiB/s over
//! `--repeat` runs and the ratios of this crate to QEMU at 64 in flight.
//! Put `--dir` on a tmpfs (/dev/shm) to measure the block layers rather
//! than the host disk's writeback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use disk::{Access, Disk};

const MIB: u64 = 1024 * 1024;

/// Virtual size of every test image.
const IMAGE_BYTES: u64 = 1024 * MIB;

/// Stride of the scattered 4 KiB pattern, in 4 KiB blocks. It is odd, so
/// the offsets visit every block of the image before repeating; qemu-img
/// bench wraps the offset into the image the same way.
const SCATTER_STRIDE_BLOCKS: u64 = 104_729;

/// An image kind to benchmark.
#[derive(Clone, Copy)]
enum ImageKind {
    /// A fully allocated raw file.
    Raw,
    /// qcow2 with every cluster allocated (preallocation=falloc).
    Qcow2Preallocated,
    /// An empty qcow2 image: writes allocate, reads find no clusters.
    Qcow2Fresh,
}

impl ImageKind {
    fn name(self) -> &'static str {
        match self {
            ImageKind::Raw => "raw",
            ImageKind::Qcow2Preallocated => "qcow2 preallocated",
            ImageKind::Qcow2Fresh => "qcow2 fresh",
        }
    }

    fn format(self) -> &'static str {
        match self {
            ImageKind::Raw => "raw",
            _ => "qcow2",
        }
    }

    /// Creates the image at `path` with qemu-img.
    fn create(self, path: &Path) {
        let size = IMAGE_BYTES.to_string();
        let path = path.to_str().expect("benchmark paths are UTF-8");
        let args: Vec<&str> = match self {
            ImageKind::Raw => vec![
                "create",
                "-q",
                "-f",
                "raw",
                "-o",
                "preallocation=full",
                path,
                &size,
            ],
            ImageKind::Qcow2Preallocated => vec![
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                "preallocation=falloc",
                path,
                &size,
            ],
            ImageKind::Qcow2Fresh => vec!["create", "-q", "-f", "qcow2", path, &size],
        };
        run_checked("qemu-img", &args);
    }
}

/// A request pattern.
#[derive(Clone, Copy)]
struct Pattern {
    name: &'static str,
    write: bool,
    request_bytes: u64,
    step_bytes: u64,
    count: u64,
}

const PATTERNS: [Pattern; 4] = [
    Pattern {
        name: "4 KiB scattered read",
        write: false,
        request_bytes: 4096,
        step_bytes: 4096 * SCATTER_STRIDE_BLOCKS,
        count: 75_000,
    },
    Pattern {
        name: "4 KiB scattered write",
        write: true,
        request_bytes: 4096,
        step_bytes: 4096 * SCATTER_STRIDE_BLOCKS,
        count: 75_000,
    },
    Pattern {
        name: "1 MiB sequential read",
        write: false,
        request_bytes: MIB,
        step_bytes: MIB,
        count: 1000,
    },
    Pattern {
        name: "1 MiB sequential write",
        write: true,
        request_bytes: MIB,
        step_bytes: MIB,
        count: 1000,
    },
];

impl Pattern {
    /// Returns the offset of request `index`, wrapped into the image as
    /// qemu-img bench wraps it.
    fn offset(&self, index: u64) -> u64 {
        (index * self.step_bytes) % (IMAGE_BYTES - self.request_bytes)
    }

    fn total_mib(&self) -> f64 {
        (self.request_bytes * self.count) as f64 / MIB as f64
    }
}

fn run_checked(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs qemu-img bench and returns the seconds it reports.
fn qemu_bench(image: &Path, kind: ImageKind, pattern: &Pattern, depth: u32) -> f64 {
    let count = pattern.count.to_string();
    let depth = depth.to_string();
    let size = pattern.request_bytes.to_string();
    let step = pattern.step_bytes.to_string();
    let mut args = vec![
        "bench",
        "-f",
        kind.format(),
        "-c",
        &count,
        "-d",
        &depth,
        "-s",
        &size,
        "-S",
        &step,
        "--pattern=165",
    ];
    if pattern.write {
        args.push("-w");
    }
    args.push(image.to_str().expect("benchmark paths are UTF-8"));
    let output = run_checked("qemu-img", &args);
    let seconds = output
        .split("Run completed in ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok());
    seconds.unwrap_or_else(|| panic!("unexpected qemu-img bench output: {output}"))
}

/// Runs the same requests through the disk crate from `threads` threads
/// (thread t issues requests t, t + threads, ...) and returns the seconds
/// they took. Opening and the final flush are not timed, as qemu-img bench
/// does not time them either.
fn crate_bench(image: &Path, pattern: &Pattern, threads: u64) -> f64 {
    let disk = Disk::open(image, None, Access::ReadWrite).expect("benchmark image opens");
    let start = Instant::now();
    std::thread::scope(|scope| {
        for first in 0..threads {
            let disk = &disk;
            scope.spawn(move || {
                let mut buf = vec![0xa5u8; pattern.request_bytes as usize];
                for index in (first..pattern.count).step_by(threads as usize) {
                    let offset = pattern.offset(index);
                    if pattern.write {
                        disk.write_at(&buf, offset)
                            .expect("benchmark write succeeds");
                    } else {
                        disk.read_at(&mut buf, offset)
                            .expect("benchmark read succeeds");
                    }
                }
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    disk.flush().expect("benchmark flush succeeds");
    seconds
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Measures one image kind and pattern. Returns MiB/s for QEMU at depth
/// 64, QEMU at depth 1, this crate from one thread and from two threads.
fn measure(directory: &Path, kind: ImageKind, pattern: &Pattern, repeat: usize) -> [f64; 4] {
    let template = directory.join("template.img");
    let _ = std::fs::remove_file(&template);
    kind.create(&template);
    let image = directory.join("run.img");

    let mut results = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..repeat {
        for (slot, result) in results.iter_mut().enumerate() {
            // A fresh copy per run keeps allocating writes comparable; the
            // copy also leaves the image in the page cache for every tool.
            run_checked(
                "cp",
                &[
                    "--sparse=always",
                    template.to_str().unwrap(),
                    image.to_str().unwrap(),
                ],
            );
            let seconds = match slot {
                0 => qemu_bench(&image, kind, pattern, 64),
                1 => qemu_bench(&image, kind, pattern, 1),
                2 => crate_bench(&image, pattern, 1),
                _ => crate_bench(&image, pattern, 2),
            };
            result.push(pattern.total_mib() / seconds);
        }
    }
    let _ = std::fs::remove_file(&image);
    let _ = std::fs::remove_file(&template);
    results.map(|mut values| median(&mut values))
}

/// Command line options.
struct Options {
    directory: PathBuf,
    repeat: usize,
    /// Only rows whose "image pattern" text contains this are measured.
    filter: String,
}

fn parse_args() -> Options {
    let mut directory = std::env::temp_dir();
    let mut repeat = 3;
    let mut filter = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => directory = PathBuf::from(args.next().expect("--dir takes a directory")),
            "--repeat" => {
                repeat = args
                    .next()
                    .and_then(|count| count.parse().ok())
                    .expect("--repeat takes a count")
            }
            "--filter" => filter = args.next().expect("--filter takes a text"),
            other => panic!(
                "unknown argument {other}; usage: disk-bench [--dir DIR] [--repeat N] [--filter TEXT]"
            ),
        }
    }
    Options {
        directory: directory.join(format!("disk-bench-{}", std::process::id())),
        repeat,
        filter,
    }
}

fn main() {
    let options = parse_args();
    let directory = &options.directory;
    std::fs::create_dir_all(directory).expect("benchmark directory can be created");

    println!(
        "| image | pattern | QEMU, 64 in flight | QEMU, 1 in flight | disk, 1 thread | disk, 2 threads | disk 1 thread / QEMU 64 | disk 2 threads / QEMU 64 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for kind in [
        ImageKind::Raw,
        ImageKind::Qcow2Preallocated,
        ImageKind::Qcow2Fresh,
    ] {
        for pattern in &PATTERNS {
            if !format!("{} {}", kind.name(), pattern.name).contains(&options.filter) {
                continue;
            }
            let [qemu_deep, qemu_single, ours, ours_two] =
                measure(directory, kind, pattern, options.repeat);
            println!(
                "| {} | {} | {qemu_deep:.0} | {qemu_single:.0} | {ours:.0} | {ours_two:.0} | {:.2} | {:.2} |",
                kind.name(),
                pattern.name,
                ours / qemu_deep,
                ours_two / qemu_deep
            );
        }
    }
    let _ = std::fs::remove_dir_all(directory);
}

//! Crash consistency: a child process writes to a qcow2 overlay and is
//! killed with SIGKILL at a random point. Afterwards `qemu-img check` must
//! find no corruption (leaked clusters are allowed), and every slot whose
//! last write completed before a completed flush must hold that data.
//!
//! The child is this test binary running the ignored test
//! `crash_writer_child`. DISK_CRASH_SEEDS sets the number of seeds
//! (default 30).

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{CheckResult, Rng, ScratchDir, qemu_img, qemu_img_check, qemu_io, text};
use disk::{Access, Backing, Disk, Format, create_qcow2};

const MIB: u64 = 1024 * 1024;
const DISK_SIZE: u64 = 8 * MIB;

/// Slots are disjoint and deliberately not cluster aligned, so writes to
/// neighbouring slots share clusters and partial clusters are copied from
/// the backing image.
const SLOT_BYTES: u64 = 100_000;
const SLOT_STRIDE: u64 = 100_003;
const SLOTS: u64 = (DISK_SIZE - SLOT_BYTES) / SLOT_STRIDE;
const OPERATIONS: u64 = 3000;

/// What one operation does to its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Fill the slot with bytes derived from (seed, operation index).
    Write,
    /// Write zeroes over the slot.
    WriteZeroes,
    /// Discard the slot (reads as zeroes).
    Discard,
    /// Flush everything written so far.
    Flush,
}

/// Returns the deterministic operation sequence for one seed.
fn operations(seed: u64) -> Vec<(u64, Action)> {
    let mut rng = Rng::new(seed);
    (0..OPERATIONS)
        .map(|_| {
            let slot = rng.below(SLOTS);
            let action = match rng.below(20) {
                0..=1 => Action::Flush,
                2 => Action::WriteZeroes,
                3 => Action::Discard,
                _ => Action::Write,
            };
            (slot, action)
        })
        .collect()
}

fn slot_data(seed: u64, operation: u64) -> Vec<u8> {
    let mut data = vec![0u8; SLOT_BYTES as usize];
    Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(operation)).fill(&mut data);
    data
}

/// Runs the operations and reports progress on stdout. This is the child
/// process; only the parent test starts it.
#[test]
#[ignore = "run by crash_leaves_consistent_image as a child process"]
fn crash_writer_child() {
    let image = std::env::var("DISK_CRASH_IMAGE").expect("DISK_CRASH_IMAGE names the image");
    let seed: u64 = std::env::var("DISK_CRASH_SEED")
        .expect("DISK_CRASH_SEED is set")
        .parse()
        .expect("DISK_CRASH_SEED is a number");
    let disk = Disk::open(Path::new(&image), None, Access::ReadWrite).unwrap();

    for (index, (slot, action)) in operations(seed).into_iter().enumerate() {
        let offset = slot * SLOT_STRIDE;
        println!("start {index}");
        match action {
            Action::Write => disk
                .write_at(&slot_data(seed, index as u64), offset)
                .unwrap(),
            Action::WriteZeroes => disk.write_zeroes(offset, SLOT_BYTES).unwrap(),
            Action::Discard => disk.discard(offset, SLOT_BYTES).unwrap(),
            Action::Flush => {
                disk.flush().unwrap();
                // Every operation before this one is durable.
                println!("flushed {index}");
            }
        }
    }
    println!("finished");
}

/// Progress the child reported before it died.
struct Progress {
    /// Operations before this index completed before a completed flush.
    flushed: u64,
    /// The highest operation index that started.
    started: u64,
}

fn parse_progress(output: &str) -> Progress {
    let mut progress = Progress {
        flushed: 0,
        started: 0,
    };
    for line in output.lines() {
        if let Some(index) = line.strip_prefix("flushed ") {
            progress.flushed = index.parse().unwrap();
        } else if let Some(index) = line.strip_prefix("start ") {
            progress.started = index.parse().unwrap();
        } else if line == "finished" {
            progress.started = OPERATIONS;
        }
    }
    progress
}

/// Creates base.qcow2 (written by qemu-io, so slots need copy-on-write)
/// and top.qcow2 over it, and returns the top image's path.
fn build_images(scratch: &ScratchDir) -> std::path::PathBuf {
    let base = scratch.join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", text(&base), "8M"]);
    qemu_io(&base, "qcow2", &["write -P 0x5b 0 8M".to_string()]);
    let top = scratch.join("top.qcow2");
    let backing = Backing {
        name: "base.qcow2",
        format: Format::Qcow2,
    };
    create_qcow2(&top, DISK_SIZE, Some(backing)).unwrap();
    top
}

/// Checks that every slot the child flushed and did not touch afterwards
/// still contains its flushed data.
fn check_flushed_slots(seed: u64, image_bytes: &[u8], progress: &Progress) {
    let operations = operations(seed);
    let mut flushed_state: Vec<Option<(u64, Action)>> = vec![None; SLOTS as usize];
    for (index, (slot, action)) in operations
        .iter()
        .enumerate()
        .take(progress.flushed as usize)
    {
        if *action != Action::Flush {
            flushed_state[*slot as usize] = Some((index as u64, *action));
        }
    }
    let last_started = (progress.started as usize).min(operations.len() - 1);
    for (slot, action) in &operations[progress.flushed as usize..=last_started] {
        if *action != Action::Flush {
            flushed_state[*slot as usize] = None;
        }
    }

    for (slot, state) in flushed_state.iter().enumerate() {
        let Some((index, action)) = state else {
            continue;
        };
        let offset = slot as u64 * SLOT_STRIDE;
        let actual = &image_bytes[offset as usize..(offset + SLOT_BYTES) as usize];
        let expected = match action {
            Action::Write => slot_data(seed, *index),
            _ => vec![0u8; SLOT_BYTES as usize],
        };
        assert!(
            actual == expected.as_slice(),
            "seed {seed}: slot {slot} at {offset:#x} lost data of operation {index} ({action:?}) \
             flushed before operation {}",
            progress.flushed
        );
    }
}

fn run_one_seed(seed: u64) {
    let scratch = ScratchDir::new("crash");
    let top = build_images(&scratch);

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DISK_CRASH_IMAGE", &top)
        .env("DISK_CRASH_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let delay = Duration::from_millis(20 + Rng::new(seed ^ 0xdead).below(400));
    std::thread::sleep(delay);
    child.kill().unwrap();
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    child.wait().unwrap();
    let progress = parse_progress(&output);
    eprintln!(
        "seed {seed}: killed after {delay:?} at operation {}, flushed before {}",
        progress.started, progress.flushed
    );

    let check = qemu_img_check(&top);
    assert!(
        matches!(check, CheckResult::Clean | CheckResult::LeaksOnly),
        "seed {seed}: killed after {delay:?} at operation {}: {check:?}",
        progress.started
    );

    let raw = scratch.join("contents.raw");
    qemu_img(&["convert", "-O", "raw", text(&top), text(&raw)]);
    let image_bytes = std::fs::read(&raw).unwrap();
    check_flushed_slots(seed, &image_bytes, &progress);
}

#[test]
fn crash_leaves_consistent_image() {
    let seeds: u64 = std::env::var("DISK_CRASH_SEEDS")
        .map(|count| count.parse().expect("DISK_CRASH_SEEDS is a number"))
        .unwrap_or(30);
    for seed in 1..=seeds {
        run_one_seed(seed);
    }
}

//! Throughput of the virtio-blk device next to plain pread/pwrite on the
//! same file.
//!
//! Run from the workspace root:
//!
//!     cargo run --release -p blockdev-bench -- [--dir DIR] [--seconds N] [--repeat N] [--filter TEXT]
//!
//! A host-side driver (`vmm::virtio::driver::QueueDriver`) places request
//! descriptors and data buffers in real guest memory, keeps 32 requests in
//! flight, signals the queue's notification eventfd (the descriptor KVM's
//! ioeventfd writes when a guest notifies) and collects completions from
//! the used ring. The device serves them from its worker thread through
//! the disk crate. The baseline is one thread calling pread/pwrite on the
//! same file with the same sizes and offsets, cycling through as many
//! buffers as there are requests in flight. Put `--dir` on a tmpfs
//! (/dev/shm) to measure the I/O paths rather than the host disk.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use disk::{Access, Disk, Format};
use vm_memory::{Bytes, GuestAddress};
use vmm::memory::GuestMemoryMmap;
use vmm::virtio::VirtioDevice;
use vmm::virtio::block::Block;
use vmm::virtio::driver::{Buffer, QueueDriver};

const MIB: u64 = 1 << 20;
const IMAGE_BYTES: u64 = 512 * MIB;
const QUEUE_DEPTH: usize = 32;
const QUEUE_SIZE: u16 = 256;
const SECTOR_BYTES: u64 = 512;
// Guest memory layout: queue, headers and status bytes, then data buffers.
const QUEUE_BASE: u64 = 0x1000;
const HEADERS: u64 = 0x10_0000;
const STATUS: u64 = 0x18_0000;
const DATA: u64 = 0x20_0000;
const GUEST_MEMORY_BYTES: usize = 64 << 20;
/// Stride of the scattered 4 KiB pattern in blocks; odd, so every block
/// of the image is visited before an offset repeats.
const SCATTER_STRIDE_BLOCKS: u64 = 104_729;

#[derive(Clone, Copy)]
enum Pattern {
    RandomRead4k,
    RandomWrite4k,
    SequentialRead1m,
    SequentialWrite1m,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::RandomRead4k => "4 KiB scattered read",
            Pattern::RandomWrite4k => "4 KiB scattered write",
            Pattern::SequentialRead1m => "1 MiB sequential read",
            Pattern::SequentialWrite1m => "1 MiB sequential write",
        }
    }

    fn request_bytes(self) -> u64 {
        match self {
            Pattern::RandomRead4k | Pattern::RandomWrite4k => 4096,
            _ => MIB,
        }
    }

    fn is_write(self) -> bool {
        matches!(self, Pattern::RandomWrite4k | Pattern::SequentialWrite1m)
    }

    fn offset(self, index: u64) -> u64 {
        let size = self.request_bytes();
        let blocks = IMAGE_BYTES / size;
        match self {
            Pattern::RandomRead4k | Pattern::RandomWrite4k => {
                (index * SCATTER_STRIDE_BLOCKS % blocks) * size
            }
            _ => (index % blocks) * size,
        }
    }
}

struct Options {
    dir: PathBuf,
    seconds: f64,
    repeat: usize,
    filter: Option<String>,
}

fn parse_options() -> Options {
    let mut options = Options {
        dir: std::env::temp_dir(),
        seconds: 2.0,
        repeat: 3,
        filter: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--dir" => options.dir = PathBuf::from(value),
            "--seconds" => {
                options.seconds = value.parse().unwrap_or_else(|_| usage("bad --seconds"))
            }
            "--repeat" => options.repeat = value.parse().unwrap_or_else(|_| usage("bad --repeat")),
            "--filter" => options.filter = Some(value),
            _ => usage(&format!("unknown option {arg}")),
        }
    }
    options
}

fn usage(problem: &str) -> ! {
    eprintln!("blockdev-bench: {problem}");
    eprintln!("usage: blockdev-bench [--dir DIR] [--seconds N] [--repeat N] [--filter TEXT]");
    std::process::exit(2);
}

fn make_image(path: &Path) {
    let _ = std::fs::remove_file(path);
    disk::create_raw(path, IMAGE_BYTES).expect("create the test image");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open the image");
    let chunk = vec![0x5au8; MIB as usize];
    for offset in (0..IMAGE_BYTES).step_by(MIB as usize) {
        file.write_all_at(&chunk, offset).expect("fill the image");
    }
    file.sync_all().expect("sync the image");
}

/// Plain pread/pwrite from one thread; returns MiB/s. It cycles through
/// as many buffers as the device has requests in flight, so both touch
/// the same amount of memory (one reused buffer would stay in the CPU
/// cache and flatter the baseline).
fn run_plain(path: &Path, pattern: Pattern, seconds: f64) -> f64 {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open the image");
    let size = pattern.request_bytes();
    let mut buffers = vec![vec![0x33u8; size as usize]; QUEUE_DEPTH];
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        let offset = pattern.offset(done);
        let buffer = &mut buffers[done as usize % QUEUE_DEPTH];
        if pattern.is_write() {
            file.write_all_at(buffer, offset).expect("pwrite");
        } else {
            file.read_exact_at(buffer, offset).expect("pread");
        }
        done += 1;
    }
    (done * size) as f64 / MIB as f64 / started.elapsed().as_secs_f64()
}

/// The device with QUEUE_DEPTH requests in flight; returns MiB/s.
fn run_device(path: &Path, pattern: Pattern, seconds: f64) -> f64 {
    let disk = Arc::new(Disk::open(path, Some(Format::Raw), Access::ReadWrite).expect("open"));
    let memory = Arc::new(
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), GUEST_MEMORY_BYTES)]).expect("memory"),
    );
    let mut device = Block::new("vioblk0".into(), disk, "bench");
    let (mut driver, notify) =
        QueueDriver::activate(&mut device, &memory, QUEUE_BASE, QUEUE_SIZE).expect("activate");

    let size = pattern.request_bytes();
    let kind: u32 = if pattern.is_write() { 1 } else { 0 };
    // Request slot s uses header s, status byte s and data buffer s.
    let submit = |driver: &mut QueueDriver, slot: u64, index: u64| {
        let header = HEADERS + slot * 16;
        let mut bytes = [0u8; 16];
        bytes[0..4].copy_from_slice(&kind.to_le_bytes());
        bytes[8..16].copy_from_slice(&(pattern.offset(index) / SECTOR_BYTES).to_le_bytes());
        memory
            .write_slice(&bytes, GuestAddress(header))
            .expect("header");
        let buffers = [
            Buffer {
                address: header,
                len: 16,
                device_writable: false,
            },
            Buffer {
                address: DATA + slot * size,
                len: size as u32,
                device_writable: !pattern.is_write(),
            },
            Buffer {
                address: STATUS + slot,
                len: 1,
                device_writable: true,
            },
        ];
        driver
            .add_request(&memory, &buffers)
            .expect("free descriptors")
    };

    let mut slots = std::collections::HashMap::new();
    let mut issued = 0u64;
    let mut completed = 0u64;
    let started = Instant::now();
    for slot in 0..QUEUE_DEPTH as u64 {
        let head = submit(&mut driver, slot, issued);
        slots.insert(head, slot);
        issued += 1;
    }
    notify.write(1).expect("kick");
    let deadline = started + Duration::from_secs_f64(seconds);
    while completed < issued {
        let mut refilled = false;
        while let Some((head, _len)) = driver.pop_used(&memory) {
            completed += 1;
            let slot = slots.remove(&head).expect("a known request");
            let status: u8 = memory
                .read_obj(GuestAddress(STATUS + slot))
                .expect("status");
            assert_eq!(status, 0, "request failed");
            if Instant::now() < deadline {
                let head = submit(&mut driver, slot, issued);
                slots.insert(head, slot);
                issued += 1;
                refilled = true;
            }
        }
        if refilled {
            if driver.needs_kick(&memory) {
                notify.write(1).expect("kick");
            }
        } else {
            std::thread::yield_now();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    device.reset();
    (completed * size) as f64 / MIB as f64 / elapsed
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let options = parse_options();
    let path = options
        .dir
        .join(format!("blockdev-bench-{}.raw", std::process::id()));
    make_image(&path);
    println!(
        "| pattern | plain pread/pwrite MiB/s | virtio-blk MiB/s (QD {QUEUE_DEPTH}) | ratio |"
    );
    println!("|---|---|---|---|");
    for pattern in [
        Pattern::RandomRead4k,
        Pattern::RandomWrite4k,
        Pattern::SequentialRead1m,
        Pattern::SequentialWrite1m,
    ] {
        if options
            .filter
            .as_deref()
            .is_some_and(|text| !pattern.name().contains(text))
        {
            continue;
        }
        let mut plain = Vec::new();
        let mut device = Vec::new();
        // Interleaved, so both see the same machine load.
        for _ in 0..options.repeat {
            plain.push(run_plain(&path, pattern, options.seconds));
            device.push(run_device(&path, pattern, options.seconds));
        }
        let (plain, device) = (median(plain), median(device));
        println!(
            "| {} | {plain:.0} | {device:.0} | {:.2} |",
            pattern.name(),
            device / plain
        );
    }
    let _ = std::fs::remove_file(&path);
}

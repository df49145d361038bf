//! Benchmark: load a generated vm.conf with 10,000 VMs.
//!
//! Each VM has its own raw disk image (an empty file), memory, an owner, an
//! interface on a switch, a local interface and a shared kernel. The time
//! therefore includes the realpath checks and user database lookups that a
//! real configuration causes. Run with
//! `cargo bench -p vmconf --bench vmconf_parse`; the result goes in
//! docs/BENCHMARKS.md.

use std::fmt::Write;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const VM_COUNT: usize = 10_000;
const RUNS: usize = 10;

fn generate(directory: &Path) -> PathBuf {
    let disks = directory.join("disks");
    fs::create_dir_all(&disks).expect("benchmark directory is writable");
    fs::write(directory.join("bsd"), b"kernel").expect("kernel file is writable");

    let mut text = String::new();
    writeln!(text, "dir = \"{}\"", directory.display()).unwrap();
    writeln!(text, "switch \"uplink\" {{\n\tinterface br0\n}}").unwrap();
    for index in 0..VM_COUNT {
        let disk = disks.join(format!("vm{index}.img"));
        fs::write(&disk, b"").expect("disk image is writable");
        writeln!(
            text,
            "vm \"vm{index}\" {{\n\
             \tmemory 1G\n\
             \tboot $dir \"/bsd\"\n\
             \tdisk $dir \"/disks/vm{index}.img\"\n\
             \towner root:root\n\
             \tinterface {{ switch \"uplink\" }}\n\
             \tlocal interface tap{index} lladdr fe:e1:bb:d1:{:02x}:{:02x}\n\
             }}",
            index >> 8,
            index & 0xff
        )
        .unwrap();
    }
    let path = directory.join("vm.conf");
    fs::write(&path, text).expect("vm.conf is writable");
    path
}

/// Returns the CPU time of the calling thread, from the first field of
/// /proc/thread-self/schedstat (nanoseconds on a CPU). Wall time alone is
/// misleading on a machine whose cores other jobs share.
fn thread_cpu_time() -> Duration {
    let text = fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let nanoseconds = text
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok());
    Duration::from_nanos(nanoseconds.unwrap_or(0))
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn main() {
    let directory = std::env::temp_dir().join(format!("vmconf-bench-{}", std::process::id()));
    let path = generate(&directory);
    let size = fs::metadata(&path)
        .map(|metadata| metadata.len())
        .unwrap_or(0);

    let mut wall: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut cpu: Vec<Duration> = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let start_cpu = thread_cpu_time();
        let loaded = vmconf::load(Some(&path), &[]).expect("the generated configuration is valid");
        cpu.push(thread_cpu_time().saturating_sub(start_cpu));
        wall.push(start.elapsed());
        assert_eq!(loaded.config.vms.len(), VM_COUNT);
    }
    wall.sort();
    cpu.sort();
    fs::remove_dir_all(&directory).expect("benchmark directory can be removed");

    println!("vm.conf with {VM_COUNT} VMs ({size} bytes), {RUNS} loads:");
    for (name, times) in [("wall", &wall), ("cpu", &cpu)] {
        println!(
            "  {name}: min {:.1} ms, median {:.1} ms, max {:.1} ms",
            milliseconds(times[0]),
            milliseconds(times[RUNS / 2]),
            milliseconds(times[RUNS - 1])
        );
    }
}

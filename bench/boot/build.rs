//! Assembles the benchmark's "first byte" guest (guest/first_byte.S) with
//! the host's gcc into `$OUT_DIR/first_byte.elf`, which the benchmark
//! embeds. It is linked at 16 MiB, like the tiny test guests.

use std::path::Path;
use std::process::Command;

fn main() {
    let source = Path::new("guest/first_byte.S");
    let output =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("first_byte.elf");
    println!("cargo:rerun-if-changed={}", source.display());
    let status = Command::new("gcc")
        .args([
            "-m64",
            "-nostdlib",
            "-static",
            "-no-pie",
            "-fno-pic",
            "-Wl,-Ttext-segment=0x1000000",
            "-Wl,--build-id=none",
            "-Wl,-e,_start",
            "-o",
        ])
        .arg(&output)
        .arg(source)
        .status()
        .expect("gcc runs (install gcc to build the benchmark guest)");
    assert!(status.success(), "gcc failed on {}", source.display());
}

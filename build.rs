//! Builds the tiny guest programs in tests/tiny/ with the host's gcc:
//! each `NAME.c` plus `start.S` becomes `$OUT_DIR/tiny/NAME.elf`, a
//! freestanding ELF linked at 16 MiB that the VM engine boots like a
//! vmlinux.

use std::path::Path;
use std::process::Command;

fn main() {
    let source_dir = Path::new("tests/tiny");
    let out_dir = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("tiny");
    std::fs::create_dir_all(&out_dir).expect("create the tiny guest output directory");
    println!("cargo:rerun-if-changed=tests/tiny");
    println!("cargo:rustc-env=TINY_GUEST_DIR={}", out_dir.display());

    let mut sources: Vec<_> = std::fs::read_dir(source_dir)
        .expect("tests/tiny exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "c"))
        .collect();
    sources.sort();
    for source in sources {
        let name = source
            .file_stem()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        let output = out_dir.join(format!("{name}.elf"));
        let status = Command::new("gcc")
            .args([
                "-O2",
                "-m64",
                "-ffreestanding",
                "-fno-pic",
                "-no-pie",
                "-nostdlib",
                "-static",
                "-fno-stack-protector",
                "-mno-red-zone",
                "-mgeneral-regs-only",
                "-fno-asynchronous-unwind-tables",
                "-Wall",
                "-Werror",
                "-Wl,-Ttext-segment=0x1000000",
                "-Wl,--build-id=none",
                "-Wl,-e,_start",
                "-o",
            ])
            .arg(&output)
            .arg(source_dir.join("start.S"))
            .arg(&source)
            .status()
            .expect("gcc runs (install gcc to build the tiny guests)");
        assert!(status.success(), "gcc failed on {}", source.display());
    }
}

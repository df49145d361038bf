//! Boots a kernel with the VM engine alone, console on stdin/stdout:
//! `boot KERNEL [INITRD] [CMDLINE] [MEMORY_MIB] [VCPUS]`.
//! A development aid for trying the engine without vmd.

use std::fs::File;
use std::os::fd::AsFd;

use vmm::{ConsoleConfig, ConsoleOutput, Kvm, Vm, VmConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: boot KERNEL [INITRD] [CMDLINE] [MEMORY_MIB] [VCPUS]");
        std::process::exit(2);
    }
    let open = |path: &str| File::open(path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    let initrd = args.get(2).filter(|p| !p.is_empty()).map(|p| open(p));
    let cmdline = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "console=ttyS0".into());
    let memory_mib: u64 = args
        .get(4)
        .map_or(256, |m| m.parse().unwrap_or_else(|_| fail("bad memory")));
    let vcpus: u8 = args
        .get(5)
        .map_or(1, |v| v.parse().unwrap_or_else(|_| fail("bad vcpus")));
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let kvm = Kvm::new().unwrap_or_else(|e| fail(&format!("/dev/kvm: {e}")));
    let started = std::time::Instant::now();
    let vm = Vm::new(
        &kvm,
        VmConfig {
            name: "boot".into(),
            memory_bytes: memory_mib << 20,
            vcpus,
            kernel: open(&args[1]),
            initrd,
            cmdline,
            console: ConsoleConfig {
                output: ConsoleOutput::File(stdout),
                input: None,
            },
            disks: Vec::new(),
        },
    )
    .unwrap_or_else(|e| fail(&proto::error_chain(&e)));
    let exit = vm.run().unwrap_or_else(|e| fail(&proto::error_chain(&e)));
    eprintln!(
        "boot: {exit:?} after {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

fn fail(message: &str) -> ! {
    eprintln!("boot: {message}");
    std::process::exit(1);
}

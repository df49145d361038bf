//! Shared helpers for the integration tests: where the tiny guests and
//! binaries are, and running a tiny guest on the VM engine.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vmm::{ConsoleConfig, ConsoleOutput, Kvm, Vm, VmConfig, VmExit};

/// Path of the tiny guest program `name` (built from tests/tiny/NAME.c).
pub fn tiny_guest(name: &str) -> PathBuf {
    PathBuf::from(env!("TINY_GUEST_DIR")).join(format!("{name}.elf"))
}

/// Opens /dev/kvm, failing the test with a clear message when it is
/// missing: these tests need KVM and never pass without it.
pub fn open_kvm() -> Kvm {
    match Kvm::new() {
        Ok(kvm) => kvm,
        Err(e) => panic!("this test needs /dev/kvm: cannot open it: {e}"),
    }
}

/// What a tiny guest printed and how it ended.
pub struct TinyRun {
    /// Everything the guest wrote to COM1.
    pub console: String,
    /// How the VM ended.
    pub exit: VmExit,
}

/// Boots tiny guest `name` with `cmdline` on `vcpus` vCPUs and 32 MiB of
/// memory, and runs it to its end.
pub fn run_tiny(name: &str, cmdline: &str, vcpus: u8) -> TinyRun {
    let kvm = open_kvm();
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let path = tiny_guest(name);
    let kernel = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("cannot open tiny guest {}: {e}", path.display()));
    let vm = Vm::new(
        &kvm,
        VmConfig {
            name: name.to_string(),
            memory_bytes: 32 << 20,
            vcpus,
            kernel,
            initrd: None,
            cmdline: cmdline.to_string(),
            console: ConsoleConfig {
                output: ConsoleOutput::Buffer(buffer.clone()),
                input: None,
            },
        },
    )
    .unwrap_or_else(|e| panic!("cannot build the VM for {name}: {e}"));
    let exit = vm
        .run()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let console = String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned();
    TinyRun { console, exit }
}

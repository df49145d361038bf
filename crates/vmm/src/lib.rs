//! The VM engine: one KVM virtual machine with its vCPUs, guest memory,
//! Linux boot, ACPI tables, legacy devices, PCI bus and virtio devices.
//!
//! The engine has no notion of vm.conf, users or other VMs: it takes open
//! files and sizes, runs one guest, and returns how the guest ended.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use vmm::{ConsoleConfig, ConsoleOutput, Vm, VmConfig};
//! let kvm = kvm_ioctls::Kvm::new()?;
//! let vm = Vm::new(&kvm, VmConfig {
//!     name: "test".into(),
//!     memory_bytes: 256 << 20,
//!     vcpus: 1,
//!     kernel: std::fs::File::open("vmlinuz")?,
//!     initrd: None,
//!     cmdline: "console=ttyS0".into(),
//!     console: ConsoleConfig { output: ConsoleOutput::Discard, input: None },
//!     disks: Vec::new(),
//! })?;
//! let exit = vm.run()?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod acpi;
pub mod boot;
pub mod bus;
pub mod cpu;
pub mod devices;
pub mod exit;
pub mod irq;
pub mod layout;
pub mod memory;
pub mod pci;
pub mod vcpu;
pub mod virtio;
mod vm;
pub mod warnings;

pub use devices::serial::ConsoleOutput;
pub use exit::{ResetCause, VmExit};
pub use kvm_ioctls::Kvm;
pub use vm::{
    ConsoleConfig, DiskConfig, MAX_DISKS, MAX_MEMORY_BYTES, MAX_VCPUS, MIN_MEMORY_BYTES, Vm,
    VmConfig, VmController, VmError,
};

/// Stack size of the engine's helper threads (device workers, console
/// input). Kept under 2 MiB so that a host with transparent huge pages set
/// to "always" cannot back a mostly idle stack with a whole huge page.
pub const HELPER_STACK_BYTES: usize = 256 * 1024;
/// Stack size of vCPU threads, under 2 MiB for the same reason.
pub const VCPU_STACK_BYTES: usize = 1024 * 1024;

/// Wraps an open `/dev/kvm` descriptor, received from a process that may
/// open device files, in the KVM system handle.
pub fn kvm_from_fd(fd: std::os::fd::OwnedFd) -> Kvm {
    use std::os::fd::IntoRawFd;
    // SAFETY: `fd` is an open descriptor this process owns, and ownership
    // moves into the handle, which closes it. If it is not /dev/kvm, every
    // KVM ioctl on it fails with an error instead of touching memory.
    unsafe { <Kvm as std::os::fd::FromRawFd>::from_raw_fd(fd.into_raw_fd()) }
}

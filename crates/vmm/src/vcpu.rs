//! vCPU threads: one per vCPU, each looping on KVM_RUN and dispatching
//! port I/O and MMIO exits to the buses.
//!
//! A thread stops when the VM's exit signal is set: the VM kicks it with a
//! signal so that a KVM_RUN in progress returns with EINTR.

use std::sync::Arc;
use std::sync::Once;
use std::thread::JoinHandle;

use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::bus::Bus;
use crate::exit::{ExitSignal, ResetCause, VmExit};

/// State shared by every vCPU thread.
#[derive(Clone)]
pub struct VcpuContext {
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// The latch that records the VM's end. The threads return once it is
    /// set.
    pub exit: Arc<ExitSignal>,
}

/// Returns the signal used to interrupt KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the no-op handler for the kick signal, once per process. The
/// handler exists only so that delivering the signal interrupts KVM_RUN
/// instead of killing the process.
pub fn install_kick_handler() -> std::io::Result<()> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = register_signal_handler(kick_signal(), handle_kick)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// Starts the thread of vCPU `index`.
pub fn spawn(index: u8, vcpu: VcpuFd, context: VcpuContext) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .stack_size(crate::VCPU_STACK_BYTES)
        .name(format!("vcpu{index}"))
        .spawn(move || run(index, vcpu, &context))
}

/// Signals `threads` until every one has returned, then joins them. The
/// VM's exit must already be recorded, or the threads go on running.
pub fn stop_all(threads: Vec<JoinHandle<()>>) {
    for thread in threads {
        // A kick that lands between the exit check and KVM_RUN is lost,
        // so keep kicking until the thread is gone.
        while !thread.is_finished() {
            let _ = thread.kill(kick_signal());
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let _ = thread.join();
    }
}

fn run(index: u8, mut vcpu: VcpuFd, context: &VcpuContext) {
    // A device that ends the VM (reset, power-off) does so during an exit;
    // checking before every entry stops this vCPU at that instruction, as
    // a real reset would.
    while !context.exit.is_triggered() {
        match vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                context.pio.read(u64::from(port), data);
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                context.pio.write(u64::from(port), data);
            }
            Ok(VcpuExit::MmioRead(address, data)) => {
                context.mmio.read(address, data);
            }
            Ok(VcpuExit::MmioWrite(address, data)) => {
                context.mmio.write(address, data);
            }
            Ok(VcpuExit::Shutdown) => {
                // KVM reports a triple fault as a shutdown; a real machine
                // resets.
                context.exit.trigger(VmExit::Reset(ResetCause::TripleFault));
                return;
            }
            Ok(VcpuExit::SystemEvent(event, _)) => {
                let exit = match event {
                    KVM_SYSTEM_EVENT_SHUTDOWN => VmExit::PowerOff,
                    KVM_SYSTEM_EVENT_RESET => VmExit::Reset(ResetCause::TripleFault),
                    KVM_SYSTEM_EVENT_CRASH => VmExit::Fatal(format!("vcpu{index}: guest crashed")),
                    other => VmExit::Fatal(format!("vcpu{index}: unknown system event {other}")),
                };
                context.exit.trigger(exit);
                return;
            }
            Ok(VcpuExit::Hlt) => {
                // With the in-kernel LAPIC, HLT exits only when the vCPU
                // can never wake up again.
                context.exit.trigger(VmExit::Fatal(format!(
                    "vcpu{index}: halted with interrupts disabled"
                )));
                return;
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                context.exit.trigger(VmExit::Fatal(format!(
                    "vcpu{index}: VM entry failed, reason 0x{reason:x} on host cpu {cpu}"
                )));
                return;
            }
            Ok(VcpuExit::InternalError) => {
                let suberror = vcpu.get_kvm_run().__bindgen_anon_1;
                // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so the
                // kernel filled the `internal` member of the union.
                let suberror = unsafe { suberror.internal.suberror };
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                context.exit.trigger(VmExit::Fatal(format!(
                    "vcpu{index}: KVM internal error {suberror} at rip 0x{rip:x}"
                )));
                return;
            }
            Ok(VcpuExit::Intr) => {}
            Ok(other) => {
                log::debug!("vcpu{index}: unhandled exit {other:?}");
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => {
                context
                    .exit
                    .trigger(VmExit::Fatal(format!("vcpu{index}: KVM_RUN failed: {e}")));
                return;
            }
        }
    }
}

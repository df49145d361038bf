//! The end of a running VM: the first power-off, reset or fatal error that
//! a vCPU or device reports wins, and the thread waiting in
//! [`ExitSignal::wait`] wakes up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// The cause of a guest reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetCause {
    /// Command 0xfe written to the i8042 command port.
    Keyboard,
    /// The ACPI reset register (port 0xcf9) was written.
    AcpiResetRegister,
    /// A triple fault (KVM_EXIT_SHUTDOWN).
    TripleFault,
}

/// The way a VM stopped running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off through ACPI S5.
    PowerOff,
    /// The guest asked to be reset (reboot).
    Reset(ResetCause),
    /// The VM was stopped from outside (the caller asked for it).
    Stopped,
    /// A vCPU hit an error KVM cannot continue from.
    Fatal(String),
}

/// A one-shot latch for the VM's exit.
#[derive(Default)]
pub struct ExitSignal {
    exit: Mutex<Option<VmExit>>,
    // Mirrors `exit.is_some()` so vCPU threads can check it on every exit
    // without taking the lock.
    triggered: AtomicBool,
    changed: Condvar,
}

impl ExitSignal {
    /// Creates an unset signal.
    pub fn new() -> ExitSignal {
        ExitSignal::default()
    }

    /// Records `exit` unless an earlier exit was recorded.
    pub fn trigger(&self, exit: VmExit) {
        let mut current = crate::bus::lock_device(&self.exit);
        if current.is_none() {
            *current = Some(exit);
            self.triggered.store(true, Ordering::Release);
            self.changed.notify_all();
        }
    }

    /// Returns true once an exit was recorded.
    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::Acquire)
    }

    /// Returns the recorded exit, if any.
    pub fn get(&self) -> Option<VmExit> {
        crate::bus::lock_device(&self.exit).clone()
    }

    /// Blocks until an exit is recorded and returns it.
    pub fn wait(&self) -> VmExit {
        let current = crate::bus::lock_device(&self.exit);
        let current = self
            .changed
            .wait_while(current, |exit| exit.is_none())
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current
            .clone()
            .expect("wait_while returns once an exit is set")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_exit_wins() {
        let signal = ExitSignal::new();
        signal.trigger(VmExit::Reset(ResetCause::Keyboard));
        signal.trigger(VmExit::PowerOff);
        assert_eq!(signal.wait(), VmExit::Reset(ResetCause::Keyboard));
    }
}

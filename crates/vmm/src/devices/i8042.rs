//! The i8042 keyboard controller, reduced to its reset line (command 0xfe
//! on port 0x64), on top of vm-superio's model.
//!
//! Port 0x60 is the data port and 0x64 the command/status port. Every read
//! returns 0: no keyboard, and a status that never reports "busy", so a
//! guest that waits for the controller before resetting never spins.

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use crate::bus::BusDevice;
use crate::exit::{ExitSignal, ResetCause, VmExit};

/// First port of the controller.
pub const I8042_PORT_BASE: u16 = 0x60;
/// Ports from the base up to and including the command port (0x60..=0x64).
pub const I8042_PORT_COUNT: u16 = 5;

/// Turns the controller's reset request into a VM reset.
pub struct ResetTrigger(pub Arc<ExitSignal>);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.trigger(VmExit::Reset(ResetCause::Keyboard));
        Ok(())
    }
}

/// The i8042 as a bus device covering ports 0x60..=0x64.
pub struct I8042 {
    device: I8042Device<ResetTrigger>,
}

impl I8042 {
    /// Creates a controller that reports resets to `exit`.
    pub fn new(exit: Arc<ExitSignal>) -> I8042 {
        I8042 {
            device: I8042Device::new(ResetTrigger(exit)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() == 1 {
            data[0] = self.device.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 1 {
            // The trigger cannot fail, so neither can the write.
            let _ = self.device.write(offset as u8, data[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_resets_vm() {
        let exit = Arc::new(ExitSignal::new());
        let mut i8042 = I8042::new(exit.clone());
        i8042.write(4, &[0xfe]);
        assert_eq!(exit.get(), Some(VmExit::Reset(ResetCause::Keyboard)));
    }

    #[test]
    fn other_command_does_nothing() {
        let exit = Arc::new(ExitSignal::new());
        let mut i8042 = I8042::new(exit.clone());
        i8042.write(4, &[0xaa]);
        assert_eq!(exit.get(), None);
    }
}

//! PCI: configuration mechanism #1 (ports 0xcf8..0xd00), the host bridge,
//! and MMIO dispatch to the BARs of the devices on bus 0.
//!
//! Firmware-style BAR assignment happens when devices are added: each gets
//! fixed addresses in the PCI MMIO window, which the DSDT publishes as the
//! root bridge's resources, so a guest keeps them. A guest may still move a
//! BAR; dispatch always uses the BAR's current value.

pub mod config;
pub mod msix;

use std::sync::{Arc, Mutex};

use crate::bus::{BusDevice, lock_device};
use crate::exit::{ExitSignal, ResetCause, VmExit};
use config::{PciConfiguration, PciIdentity};

/// First port of configuration mechanism #1.
pub const PCI_CONFIG_PORT_BASE: u16 = 0xcf8;
/// Ports 0xcf8..0xd00: address register and data window.
pub const PCI_CONFIG_PORT_COUNT: u16 = 8;
/// The reset control register, a byte port inside the address register.
pub const RESET_CONTROL_PORT: u16 = 0xcf9;
/// Value the ACPI reset register write uses (system reset + CPU reset).
pub const RESET_CONTROL_VALUE: u8 = 0x06;
const RESET_CONTROL_CPU_RESET: u8 = 1 << 2;
/// Device slots on bus 0.
pub const PCI_SLOTS: usize = 32;

/// A PCI function on bus 0.
pub trait PciDevice: Send {
    /// Reads the 32-bit configuration register containing `offset`.
    fn read_config(&mut self, offset: usize) -> u32;
    /// Writes `data` at configuration `offset`.
    fn write_config(&mut self, offset: usize, data: &[u8]);
    /// Returns the BAR index and offset when `address` falls in a BAR.
    fn bar_containing(&self, address: u64) -> Option<(usize, u64)>;
    /// Reads from BAR `bar` at `offset`.
    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    /// Writes to BAR `bar` at `offset`.
    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]);
}

/// Finds the BAR of `config` that contains `address`.
pub fn find_bar(config: &PciConfiguration, address: u64) -> Option<(usize, u64)> {
    (0..config::BAR_COUNT).find_map(|bar| {
        let start = config.bar_address(bar)?;
        let offset = address.checked_sub(start)?;
        (offset < config.bar_size(bar)).then_some((bar, offset))
    })
}

/// The devices on bus 0, indexed by slot.
#[derive(Clone, Default)]
pub struct PciBus {
    slots: Vec<Option<Arc<Mutex<dyn PciDevice>>>>,
}

impl PciBus {
    /// Creates a bus with only the host bridge, in slot 0.
    pub fn new() -> PciBus {
        let mut bus = PciBus {
            slots: vec![None; PCI_SLOTS],
        };
        bus.slots[0] = Some(Arc::new(Mutex::new(HostBridge::new())));
        bus
    }

    /// Puts `device` in the first free slot; returns the slot, or None
    /// when the bus is full.
    pub fn add(&mut self, device: Arc<Mutex<dyn PciDevice>>) -> Option<usize> {
        let slot = self.slots.iter().position(Option::is_none)?;
        self.slots[slot] = Some(device);
        Some(slot)
    }

    fn device(&self, slot: usize) -> Option<&Arc<Mutex<dyn PciDevice>>> {
        self.slots.get(slot)?.as_ref()
    }
}

/// Configuration mechanism #1 on ports 0xcf8..0xd00, plus the reset
/// control register at 0xcf9.
pub struct PciConfigIo {
    bus: PciBus,
    address: u32,
    exit: Arc<ExitSignal>,
}

impl PciConfigIo {
    /// Creates the port handler for `bus`; resets go to `exit`.
    pub fn new(bus: PciBus, exit: Arc<ExitSignal>) -> PciConfigIo {
        PciConfigIo {
            bus,
            address: 0,
            exit,
        }
    }

    // Returns the slot and register offset selected by the address
    // register, or None for a disabled cycle, another bus or function.
    fn selected(&self, data_offset: u64) -> Option<(usize, usize)> {
        let enabled = self.address & 0x8000_0000 != 0;
        let bus = (self.address >> 16) & 0xff;
        let function = (self.address >> 8) & 0x7;
        if !enabled || bus != 0 || function != 0 {
            return None;
        }
        let slot = ((self.address >> 11) & 0x1f) as usize;
        let register = (self.address & 0xfc) as usize + data_offset as usize;
        Some((slot, register))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset < 4 {
            let bytes = self.address.to_le_bytes();
            for (i, byte) in data.iter_mut().enumerate() {
                *byte = bytes.get(offset as usize + i).copied().unwrap_or(0xff);
            }
            return;
        }
        data.fill(0xff);
        let data_offset = offset - 4;
        let Some((slot, register)) = self.selected(data_offset) else {
            return;
        };
        let Some(device) = self.bus.device(slot) else {
            return;
        };
        let value = lock_device(device).read_config(register & !3);
        let bytes = value.to_le_bytes();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = bytes.get(register % 4 + i).copied().unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 4) => {
                self.address = u32::from_le_bytes(data.try_into().expect("4 bytes"));
            }
            (1, 1) if data[0] & RESET_CONTROL_CPU_RESET != 0 => {
                self.exit
                    .trigger(VmExit::Reset(ResetCause::AcpiResetRegister));
            }
            (4.., _) => {
                let Some((slot, register)) = self.selected(offset - 4) else {
                    return;
                };
                if let Some(device) = self.bus.device(slot) {
                    lock_device(device).write_config(register, data);
                }
            }
            _ => {}
        }
    }
}

/// Dispatches accesses in the PCI MMIO window to the BAR that contains
/// them.
pub struct PciMmioWindow {
    bus: PciBus,
    window_start: u64,
}

impl PciMmioWindow {
    /// Creates the handler for a window starting at `window_start`.
    pub fn new(bus: PciBus, window_start: u64) -> PciMmioWindow {
        PciMmioWindow { bus, window_start }
    }

    fn dispatch(&self, offset: u64, access: impl FnOnce(&mut dyn PciDevice, usize, u64)) -> bool {
        let address = self.window_start + offset;
        for device in self.bus.slots.iter().flatten() {
            let mut device = lock_device(device);
            if let Some((bar, bar_offset)) = device.bar_containing(address) {
                access(&mut *device, bar, bar_offset);
                return true;
            }
        }
        false
    }
}

impl BusDevice for PciMmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        self.dispatch(offset, |device, bar, bar_offset| {
            device.read_bar(bar, bar_offset, data)
        });
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.dispatch(offset, |device, bar, bar_offset| {
            device.write_bar(bar, bar_offset, data)
        });
    }
}

/// The host bridge in slot 0: configuration space only.
pub struct HostBridge {
    config: PciConfiguration,
}

impl HostBridge {
    fn new() -> HostBridge {
        HostBridge {
            config: PciConfiguration::new(PciIdentity {
                vendor_id: 0x8086,
                device_id: 0x0d57,
                revision: 0,
                // Bridge device, host bridge.
                class_code: 0x06_0000,
                subsystem_vendor_id: 0,
                subsystem_id: 0,
            }),
        }
    }
}

impl PciDevice for HostBridge {
    fn read_config(&mut self, offset: usize) -> u32 {
        self.config.read_register(offset)
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
    }

    fn bar_containing(&self, _address: u64) -> Option<(usize, u64)> {
        None
    }

    fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write_bar(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_io() -> (PciConfigIo, Arc<ExitSignal>) {
        let exit = Arc::new(ExitSignal::new());
        (PciConfigIo::new(PciBus::new(), exit.clone()), exit)
    }

    fn read_config(io: &mut PciConfigIo, slot: u32, register: u32) -> u32 {
        io.write(0, &(0x8000_0000 | slot << 11 | register).to_le_bytes());
        let mut data = [0u8; 4];
        io.read(4, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn host_bridge_answers_in_slot_0() {
        let (mut io, _) = config_io();
        assert_eq!(read_config(&mut io, 0, 0), 0x0d57_8086);
    }

    #[test]
    fn empty_slot_reads_all_ones() {
        let (mut io, _) = config_io();
        assert_eq!(read_config(&mut io, 5, 0), 0xffff_ffff);
    }

    #[test]
    fn address_register_reads_back() {
        let (mut io, _) = config_io();
        io.write(0, &0x8000_0810u32.to_le_bytes());
        let mut data = [0u8; 4];
        io.read(0, &mut data);
        assert_eq!(u32::from_le_bytes(data), 0x8000_0810);
    }

    #[test]
    fn reset_control_write_resets() {
        let (mut io, exit) = config_io();
        io.write(1, &[RESET_CONTROL_VALUE]);
        assert_eq!(
            exit.get(),
            Some(VmExit::Reset(ResetCause::AcpiResetRegister))
        );
    }
}

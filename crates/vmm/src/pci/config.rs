//! A PCI type 0 configuration space (256 bytes) with BAR sizing and a
//! capability list (PCI Local Bus 3.0 §6.1, §6.2.5, §6.7).

/// Offset of the command register.
pub const COMMAND: usize = 0x04;
/// Command register bit: the device decodes memory BARs.
pub const COMMAND_MEMORY_SPACE: u16 = 1 << 1;
const STATUS_CAPABILITIES_LIST: u32 = 1 << 20;
const BAR0: usize = 0x10;
const CAPABILITIES_POINTER: usize = 0x34;
const FIRST_CAPABILITY: usize = 0x40;
const CONFIG_SPACE_BYTES: usize = 256;

/// Number of BARs of a type 0 header.
pub const BAR_COUNT: usize = 6;

/// The identity of a PCI function.
#[derive(Clone, Copy, Debug)]
pub struct PciIdentity {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class code, subclass and programming interface (24 bits).
    pub class_code: u32,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
}

/// A 32-bit memory BAR.
#[derive(Clone, Copy, Debug, Default)]
struct Bar {
    size: u32,
}

/// Configuration space registers plus, for each 32-bit register, the mask
/// of bits the guest may change.
pub struct PciConfiguration {
    registers: [u32; CONFIG_SPACE_BYTES / 4],
    writable: [u32; CONFIG_SPACE_BYTES / 4],
    bars: [Bar; BAR_COUNT],
    next_capability: usize,
    last_capability: Option<usize>,
}

impl PciConfiguration {
    /// Creates a header for `identity` with no BARs and no capabilities.
    pub fn new(identity: PciIdentity) -> PciConfiguration {
        let mut registers = [0u32; CONFIG_SPACE_BYTES / 4];
        let mut writable = [0u32; CONFIG_SPACE_BYTES / 4];
        registers[0] = u32::from(identity.device_id) << 16 | u32::from(identity.vendor_id);
        registers[2] = identity.class_code << 8 | u32::from(identity.revision);
        registers[0x2c / 4] =
            u32::from(identity.subsystem_id) << 16 | u32::from(identity.subsystem_vendor_id);
        // Command: I/O, memory, bus master, interrupt disable. Status bits are
        // read-only here (no error bits to clear).
        writable[COMMAND / 4] = 0x0000_0407;
        // Cache line size, latency timer.
        writable[0x0c / 4] = 0x0000_ffff;
        // Interrupt line (scratch register for the OS).
        writable[0x3c / 4] = 0x0000_00ff;
        PciConfiguration {
            registers,
            writable,
            bars: [Bar::default(); BAR_COUNT],
            next_capability: FIRST_CAPABILITY,
            last_capability: None,
        }
    }

    /// Declares BAR `index` as a 32-bit non-prefetchable memory BAR of
    /// `size` bytes (a power of two, at least 4 KiB) at `address`.
    pub fn add_memory_bar(&mut self, index: usize, address: u32, size: u32) {
        assert!(
            index < BAR_COUNT && size.is_power_of_two() && size >= 0x1000,
            "BAR {index} of size 0x{size:x} is a programming error"
        );
        self.bars[index].size = size;
        self.registers[BAR0 / 4 + index] = address & !(size - 1);
        self.writable[BAR0 / 4 + index] = !(size - 1);
    }

    /// Returns the address BAR `index` decodes, or None when the BAR is
    /// absent or memory decoding is off.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let bar = self.bars.get(index)?;
        if bar.size == 0 || self.command() & COMMAND_MEMORY_SPACE == 0 {
            return None;
        }
        Some(u64::from(self.registers[BAR0 / 4 + index] & !0xf))
    }

    /// Returns the size of BAR `index` (0 when absent).
    pub fn bar_size(&self, index: usize) -> u64 {
        self.bars.get(index).map_or(0, |bar| u64::from(bar.size))
    }

    /// Returns the command register.
    pub fn command(&self) -> u16 {
        self.registers[COMMAND / 4] as u16
    }

    /// Appends a capability whose body (after the ID and next pointer) is
    /// `body`; `writable_body` marks guest-writable bits per body byte.
    /// Returns the capability's offset in configuration space.
    pub fn add_capability(&mut self, id: u8, body: &[u8], writable_body: &[u8]) -> usize {
        let offset = self.next_capability;
        let len = (2 + body.len()).next_multiple_of(4);
        assert!(
            offset + len <= CONFIG_SPACE_BYTES && writable_body.len() <= body.len(),
            "capabilities overflow configuration space: a programming error"
        );
        self.write_byte_raw(offset, id);
        for (i, byte) in body.iter().enumerate() {
            self.write_byte_raw(offset + 2 + i, *byte);
        }
        for (i, mask) in writable_body.iter().enumerate() {
            let at = offset + 2 + i;
            self.writable[at / 4] |= u32::from(*mask) << ((at % 4) * 8);
        }
        match self.last_capability {
            Some(previous) => self.write_byte_raw(previous + 1, offset as u8),
            None => {
                self.registers[CAPABILITIES_POINTER / 4] = offset as u32;
                self.registers[COMMAND / 4] |= STATUS_CAPABILITIES_LIST;
            }
        }
        self.last_capability = Some(offset);
        self.next_capability = offset + len;
        offset
    }

    /// Stores `data` at `offset` regardless of the writable masks, for
    /// registers the device itself updates.
    pub fn write_raw(&mut self, offset: usize, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            if offset + i < CONFIG_SPACE_BYTES {
                self.write_byte_raw(offset + i, *byte);
            }
        }
    }

    fn write_byte_raw(&mut self, offset: usize, value: u8) {
        let shift = (offset % 4) * 8;
        let register = &mut self.registers[offset / 4];
        *register = (*register & !(0xff << shift)) | u32::from(value) << shift;
    }

    /// Reads the 32-bit register containing `offset`.
    pub fn read_register(&self, offset: usize) -> u32 {
        self.registers
            .get(offset / 4)
            .copied()
            .unwrap_or(0xffff_ffff)
    }

    /// Reads a byte, for capability handlers.
    pub fn read_byte(&self, offset: usize) -> u8 {
        (self.read_register(offset) >> ((offset % 4) * 8)) as u8
    }

    /// Writes `data` at `offset`, changing only writable bits.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            let at = offset + i;
            if at >= CONFIG_SPACE_BYTES {
                return;
            }
            let shift = (at % 4) * 8;
            let mask = (self.writable[at / 4] >> shift) & 0xff;
            let register = &mut self.registers[at / 4];
            let old = (*register >> shift) & 0xff;
            let new = (old & !mask) | (u32::from(*byte) & mask);
            *register = (*register & !(0xff << shift)) | new << shift;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PciConfiguration {
        PciConfiguration::new(PciIdentity {
            vendor_id: 0x1af4,
            device_id: 0x1044,
            revision: 1,
            class_code: 0xff_0000,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x40,
        })
    }

    #[test]
    fn identity_is_in_header() {
        let config = config();
        assert_eq!(config.read_register(0), 0x1044_1af4);
        assert_eq!(config.read_register(8), 0xff00_0001);
        assert_eq!(config.read_register(0x2c), 0x0040_1af4);
    }

    #[test]
    fn bar_sizing_reads_back_size_mask() {
        let mut config = config();
        config.add_memory_bar(0, 0xc000_0000, 0x4000);
        config.write(0x10, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(config.read_register(0x10), 0xffff_c000);
    }

    #[test]
    fn bar_address_needs_memory_decoding() {
        let mut config = config();
        config.add_memory_bar(0, 0xc000_0000, 0x4000);
        assert_eq!(config.bar_address(0), None);
        config.write(COMMAND, &[COMMAND_MEMORY_SPACE as u8]);
        assert_eq!(config.bar_address(0), Some(0xc000_0000));
    }

    #[test]
    fn identity_is_read_only() {
        let mut config = config();
        config.write(0, &[0, 0, 0, 0]);
        assert_eq!(config.read_register(0), 0x1044_1af4);
    }

    #[test]
    fn capabilities_are_linked() {
        let mut config = config();
        let first = config.add_capability(0x09, &[0x10, 1, 2], &[]);
        let second = config.add_capability(0x11, &[0, 0], &[0, 0xc0]);
        assert_eq!((first, second), (0x40, 0x48));
        assert_eq!(config.read_byte(0x34), 0x40);
        assert_eq!(config.read_byte(0x41), 0x48);
        assert_eq!(config.read_byte(0x49), 0);
        assert_ne!(config.read_register(4) & STATUS_CAPABILITIES_LIST, 0);
        config.write(0x4b, &[0xff]);
        assert_eq!(config.read_byte(0x4b), 0xc0);
    }
}

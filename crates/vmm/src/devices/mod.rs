//! Legacy (non-PCI) devices: one file per chip, each a [`crate::bus::BusDevice`].

pub mod acpi_pm;
pub mod cmos;
pub mod i8042;
pub mod serial;

/// A device that accepts every write and reads as zero, for ports that
/// guests write often and that need no model (the POST diagnostic port).
pub struct Sink;

impl crate::bus::BusDevice for Sink {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

//! Port I/O and MMIO dispatch from vCPU exits to device models.
//!
//! The bus is built once before the vCPUs start and never changes, so
//! dispatch needs no lock on the bus itself. Each device has its own mutex.
//! An access that no device claims reads as all ones and a write to it is
//! dropped, as on a real machine with nothing decoding the address.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// A device model reachable through port I/O or MMIO.
pub trait BusDevice: Send {
    /// Handles a read of `data.len()` bytes at `offset` from the start of
    /// the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a write of `data` at `offset` from the start of the range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// The address space a bus decodes, for log messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSpace {
    /// x86 I/O ports.
    Pio,
    /// Memory-mapped I/O.
    Mmio,
}

struct BusRange {
    start: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// The largest number of distinct unclaimed addresses logged per bus.
const MAX_LOGGED_UNCLAIMED: usize = 64;

/// An immutable set of device ranges in one address space.
pub struct Bus {
    space: AddressSpace,
    ranges: Vec<BusRange>,
    logged_unclaimed: Mutex<HashSet<u64>>,
}

/// Error building a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Two devices claim overlapping ranges.
    #[error("{space:?} range 0x{start:x}+0x{len:x} overlaps another device")]
    Overlap {
        /// The address space.
        space: AddressSpace,
        /// Start of the rejected range.
        start: u64,
        /// Length of the rejected range.
        len: u64,
    },
}

impl Bus {
    /// Creates an empty bus for `space`.
    pub fn new(space: AddressSpace) -> Bus {
        Bus {
            space,
            ranges: Vec::new(),
            logged_unclaimed: Mutex::new(HashSet::new()),
        }
    }

    /// Adds `device` at `start..start + len`.
    pub fn insert(
        &mut self,
        device: Arc<Mutex<dyn BusDevice>>,
        start: u64,
        len: u64,
    ) -> Result<(), BusError> {
        let end = start.checked_add(len).ok_or(BusError::Overlap {
            space: self.space,
            start,
            len,
        })?;
        if self
            .ranges
            .iter()
            .any(|r| start < r.start + r.len && r.start < end)
        {
            return Err(BusError::Overlap {
                space: self.space,
                start,
                len,
            });
        }
        let at = self.ranges.partition_point(|r| r.start < start);
        self.ranges.insert(at, BusRange { start, len, device });
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(&BusRange, u64)> {
        let at = self.ranges.partition_point(|r| r.start <= addr);
        let range = self.ranges.get(at.checked_sub(1)?)?;
        let offset = addr - range.start;
        (offset < range.len).then_some((range, offset))
    }

    /// Dispatches a read; returns false when no device claims `addr`, in
    /// which case `data` is filled with all ones.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((range, offset)) => {
                lock_device(&range.device).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                self.log_unclaimed(addr, "read");
                false
            }
        }
    }

    /// Dispatches a write; returns false when no device claims `addr`, in
    /// which case the write is dropped.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((range, offset)) => {
                lock_device(&range.device).write(offset, data);
                true
            }
            None => {
                self.log_unclaimed(addr, "write");
                false
            }
        }
    }

    // A guest can probe any address in a loop, so each address is logged
    // once and the set of logged addresses is bounded.
    fn log_unclaimed(&self, addr: u64, access: &str) {
        let mut logged = lock_device(&self.logged_unclaimed);
        if logged.len() < MAX_LOGGED_UNCLAIMED && logged.insert(addr) {
            let space = match self.space {
                AddressSpace::Pio => "port",
                AddressSpace::Mmio => "mmio",
            };
            log::debug!("guest {access} of unclaimed {space} 0x{addr:x}");
        }
    }
}

/// Locks a device, recovering from a panic in another vCPU thread: device
/// state stays usable because every handler leaves it consistent between
/// register accesses.
pub fn lock_device<T: ?Sized>(device: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match device.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    fn bus_with_recorder() -> (Bus, Arc<Mutex<Recorder>>) {
        let device = Arc::new(Mutex::new(Recorder { writes: Vec::new() }));
        let mut bus = Bus::new(AddressSpace::Pio);
        bus.insert(device.clone(), 0x3f8, 8).unwrap();
        (bus, device)
    }

    #[test]
    fn read_inside_range_reaches_device_with_offset() {
        let (bus, _) = bus_with_recorder();
        let mut data = [0u8; 1];
        assert!(bus.read(0x3fd, &mut data));
        assert_eq!(data, [5]);
    }

    #[test]
    fn write_inside_range_reaches_device_with_offset() {
        let (bus, device) = bus_with_recorder();
        assert!(bus.write(0x3ff, &[0x41]));
        assert_eq!(device.lock().unwrap().writes, vec![(7, vec![0x41])]);
    }

    #[test]
    fn unclaimed_read_returns_all_ones() {
        let (bus, _) = bus_with_recorder();
        let mut data = [0u8; 4];
        assert!(!bus.read(0x400, &mut data));
        assert_eq!(data, [0xff; 4]);
    }

    #[test]
    fn overlapping_insert_is_rejected() {
        let (mut bus, device) = bus_with_recorder();
        let err = bus.insert(device, 0x3fc, 8).unwrap_err();
        assert!(matches!(
            err,
            BusError::Overlap {
                start: 0x3fc,
                len: 8,
                ..
            }
        ));
    }
}

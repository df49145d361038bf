//! The MSI-X table and pending bit array of one PCI function (PCI Local Bus
//! 3.0 §6.8.2), connected to KVM routes through [`IrqRouting`].

use std::sync::Arc;

use crate::irq::{IrqError, IrqRouting, MsiVector};
use crate::warnings::WarningBudget;

/// Bytes per MSI-X table entry.
pub const MSIX_ENTRY_BYTES: u64 = 16;
const ENTRY_VECTOR_CONTROL_MASKED: u32 = 1;
/// Message control: MSI-X enable.
pub const MSIX_CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
pub const MSIX_CONTROL_FUNCTION_MASK: u16 = 1 << 14;

#[derive(Clone, Copy, Default)]
struct Entry {
    address: u64,
    data: u32,
    vector_control: u32,
}

/// An MSI-X table whose vectors deliver through KVM irqfds.
pub struct MsixTable {
    entries: Vec<Entry>,
    vectors: Vec<Arc<MsiVector>>,
    routing: Arc<IrqRouting>,
    enabled: bool,
    function_masked: bool,
    warnings: WarningBudget,
}

impl MsixTable {
    /// Creates a table of `count` vectors, all masked.
    pub fn new(routing: Arc<IrqRouting>, count: u16) -> Result<MsixTable, IrqError> {
        let vectors = (0..count)
            .map(|_| routing.allocate_vector())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MsixTable {
            entries: vec![
                Entry {
                    vector_control: ENTRY_VECTOR_CONTROL_MASKED,
                    ..Entry::default()
                };
                count as usize
            ],
            vectors,
            routing,
            warnings: WarningBudget::default(),
            enabled: false,
            function_masked: false,
        })
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// Returns true when the table has no vectors.
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// The vector at `index`, for a device to trigger.
    pub fn vector(&self, index: u16) -> Option<Arc<MsiVector>> {
        self.vectors.get(index as usize).cloned()
    }

    /// Applies the enable and function-mask bits of the message control
    /// register.
    pub fn set_control(&mut self, control: u16) {
        self.enabled = control & MSIX_CONTROL_ENABLE != 0;
        self.function_masked = control & MSIX_CONTROL_FUNCTION_MASK != 0;
        for index in 0..self.entries.len() {
            self.update_vector(index);
        }
    }

    /// Reads from the table at byte `offset`.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let index = (offset / MSIX_ENTRY_BYTES) as usize;
        let Some(entry) = self.entries.get(index) else {
            return;
        };
        let bytes = entry_bytes(entry);
        let start = (offset % MSIX_ENTRY_BYTES) as usize;
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = bytes.get(start + i).copied().unwrap_or(0);
        }
    }

    /// Writes to the table at byte `offset`.
    pub fn write_table(&mut self, offset: u64, data: &[u8]) {
        let index = (offset / MSIX_ENTRY_BYTES) as usize;
        let Some(entry) = self.entries.get_mut(index) else {
            return;
        };
        let mut bytes = entry_bytes(entry);
        let start = (offset % MSIX_ENTRY_BYTES) as usize;
        for (i, byte) in data.iter().enumerate() {
            if let Some(slot) = bytes.get_mut(start + i) {
                *slot = *byte;
            }
        }
        *entry = Entry {
            address: u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")),
            data: u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")),
            vector_control: u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")),
        };
        self.update_vector(index);
    }

    /// Reads the pending bit array at byte `offset`.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let first_vector = (offset as usize + i) * 8;
            *byte = (0..8)
                .filter(|bit| {
                    self.vectors
                        .get(first_vector + bit)
                        .is_some_and(|vector| vector.is_pending())
                })
                .fold(0, |acc, bit| acc | 1 << bit);
        }
    }

    fn update_vector(&mut self, index: usize) {
        let entry = self.entries[index];
        let vector = &self.vectors[index];
        let masked = !self.enabled
            || self.function_masked
            || entry.vector_control & ENTRY_VECTOR_CONTROL_MASKED != 0;
        if !masked
            && let Err(e) = self
                .routing
                .set_msi_route(vector.gsi(), entry.address, entry.data)
        {
            self.warnings
                .warn("msix", format_args!("vector {index}: {e}"));
        }
        vector.set_masked(masked);
    }
}

fn entry_bytes(entry: &Entry) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[0..8].copy_from_slice(&entry.address.to_le_bytes());
    bytes[8..12].copy_from_slice(&entry.data.to_le_bytes());
    bytes[12..16].copy_from_slice(&entry.vector_control.to_le_bytes());
    bytes
}

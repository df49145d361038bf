//! The guest physical address map of an x86_64 VM.
//!
//! Everything that places data or devices in guest physical memory takes its
//! address from here, so that two users of the same range cannot drift apart.
//!
//! ```text
//! 0x0000_0000  RAM (real-mode IVT, boot data: GDT, zero page, page tables)
//! 0x0009_fc00  reserved (EBDA) up to 0x000a_0000
//! 0x000a_0000  reserved: VGA hole and BIOS area; ACPI tables at 0x000e_0000
//! 0x0010_0000  RAM: kernel, initrd, the rest of low memory
//! 0xc000_0000  PCI MMIO window (32-bit BARs)
//! 0xfec0_0000  IOAPIC, then LAPIC at 0xfee0_0000
//! 0x1_0000_0000  RAM above 4 GiB, when the VM has more than 3 GiB
//! ```

/// Global descriptor table built for the 64-bit boot entry.
pub const GDT_START: u64 = 0x500;
/// Interrupt descriptor table (empty) loaded at boot.
pub const IDT_START: u64 = 0x540;
/// Linux boot protocol zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level-4 page map of the boot identity mapping.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table of the boot identity mapping.
pub const PDPT_START: u64 = 0xa000;
/// First of four page directories (2 MiB pages) mapping the low 4 GiB.
pub const PD_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Room reserved for the kernel command line, terminating NUL included.
pub const CMDLINE_MAX_BYTES: usize = 0x1_0000;
/// Start of the extended BIOS data area, where usable low memory ends.
pub const EBDA_START: u64 = 0x9_fc00;
/// ACPI tables, RSDP first, inside the BIOS area where Linux scans for it.
pub const ACPI_START: u64 = 0xe_0000;
/// End of the BIOS area (exclusive).
pub const BIOS_AREA_END: u64 = 0x10_0000;
/// Start of memory above the first MiB, where kernels are loaded.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;

/// Start of the PCI MMIO window, which is also where low RAM ends.
pub const PCI_MMIO_START: u64 = 0xc000_0000;
/// Size of the PCI MMIO window, which stops below the IOAPIC.
pub const PCI_MMIO_SIZE: u64 = IOAPIC_START - PCI_MMIO_START;
/// IOAPIC registers (KVM's in-kernel IOAPIC).
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC registers.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// Start of RAM above the 32-bit hole.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;

/// TSS area KVM needs on Intel hosts (three pages), below the BIOS ROM.
pub const KVM_TSS_START: u64 = 0xfffb_d000;
/// Identity map page KVM needs on Intel hosts, just below the TSS.
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;

const _: () = assert!(PCI_MMIO_START + PCI_MMIO_SIZE <= HIGH_RAM_START);

/// One guest RAM range: start address and length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    /// Guest physical start address.
    pub start: u64,
    /// Length in bytes.
    pub len_bytes: u64,
}

/// Splits `memory_bytes` of RAM around the PCI hole: low RAM from 0 up to the
/// MMIO window, the rest above 4 GiB.
pub fn ram_ranges(memory_bytes: u64) -> Vec<RamRange> {
    let low = memory_bytes.min(PCI_MMIO_START);
    let mut ranges = vec![RamRange {
        start: 0,
        len_bytes: low,
    }];
    if memory_bytes > low {
        ranges.push(RamRange {
            start: HIGH_RAM_START,
            len_bytes: memory_bytes - low,
        });
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_low_range() {
        assert_eq!(
            ram_ranges(512 << 20),
            vec![RamRange {
                start: 0,
                len_bytes: 512 << 20
            }]
        );
    }

    #[test]
    fn memory_above_hole_moves_to_4g() {
        assert_eq!(
            ram_ranges(4 << 30),
            vec![
                RamRange {
                    start: 0,
                    len_bytes: 0xc000_0000
                },
                RamRange {
                    start: 0x1_0000_0000,
                    len_bytes: 0x4000_0000
                },
            ]
        );
    }
}

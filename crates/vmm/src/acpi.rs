//! ACPI tables: RSDP, XSDT, FADT, FACS, DSDT and MADT, written into the
//! BIOS area where Linux finds them (ACPI 6.5 §5.2).
//!
//! The platform uses ACPI fixed hardware: PM1a event and control blocks
//! and the PM timer (see [`crate::devices::acpi_pm`]), a fixed-feature
//! power button, the SCI on ISA IRQ 9, and the reset register at port 0xcf9.
//! The DSDT contains `\_S5` (soft off) and the PCI root bridge with the
//! resources the guest may assign to devices.

use acpi_tables::Aml;
use acpi_tables::aml;
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace as GasSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use vm_memory::{Bytes, GuestAddress};

use crate::devices::acpi_pm::{
    PM_TMR_LEN, PM_TMR_PORT, PM1_CNT_LEN, PM1_EVT_LEN, PM1A_CNT_PORT, PM1A_EVT_PORT, S5_SLEEP_TYPE,
    SCI_IRQ,
};
use crate::layout::{
    ACPI_START, BIOS_AREA_END, IOAPIC_START, LAPIC_START, PCI_MMIO_SIZE, PCI_MMIO_START,
};
use crate::memory::GuestMemoryMmap;
use crate::pci::{
    PCI_CONFIG_PORT_BASE, PCI_CONFIG_PORT_COUNT, RESET_CONTROL_PORT, RESET_CONTROL_VALUE,
};

const OEM_ID: [u8; 6] = *b"VMDLNX";
const OEM_TABLE_ID: [u8; 8] = *b"VMDLINUX";
const OEM_REVISION: u32 = 1;

/// Errors writing the tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables do not fit the BIOS area.
    #[error("ACPI tables need {needed} bytes; the BIOS area has {available}")]
    TooLarge {
        /// Bytes the tables need.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// Writing into guest memory failed.
    #[error("cannot write ACPI tables into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Writes every table for a VM with `vcpus` processors; returns the
/// address of the RSDP.
pub fn write_tables(memory: &GuestMemoryMmap, vcpus: u8) -> Result<u64, AcpiError> {
    let mut writer = TableWriter {
        memory,
        next: ACPI_START,
    };
    let rsdp_address = writer.reserve(Rsdp::len() as u64, 16)?;
    let facs_address = writer.put(&aml_bytes(&FACS::new()), 64)?;
    let dsdt_address = writer.put(dsdt().as_slice(), 16)?;
    let fadt_address = writer.put(&aml_bytes(&fadt(facs_address, dsdt_address)), 16)?;
    let madt_address = writer.put(madt(vcpus).as_slice(), 16)?;

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_address);
    xsdt.add_entry(madt_address);
    let xsdt_address = writer.put(&aml_bytes(&xsdt), 16)?;

    let rsdp = Rsdp::new(OEM_ID, xsdt_address);
    memory
        .write_slice(&aml_bytes(&rsdp), GuestAddress(rsdp_address))
        .map_err(AcpiError::Write)?;
    Ok(rsdp_address)
}

fn aml_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

struct TableWriter<'a> {
    memory: &'a GuestMemoryMmap,
    next: u64,
}

impl TableWriter<'_> {
    fn reserve(&mut self, len: u64, align: u64) -> Result<u64, AcpiError> {
        let address = self.next.next_multiple_of(align);
        let end = address + len;
        if end > BIOS_AREA_END {
            return Err(AcpiError::TooLarge {
                needed: end - ACPI_START,
                available: BIOS_AREA_END - ACPI_START,
            });
        }
        self.next = end;
        Ok(address)
    }

    fn put(&mut self, bytes: &[u8], align: u64) -> Result<u64, AcpiError> {
        let address = self.reserve(bytes.len() as u64, align)?;
        self.memory
            .write_slice(bytes, GuestAddress(address))
            .map_err(AcpiError::Write)?;
        Ok(address)
    }
}

fn io_register(port: u16, len_bytes: u8) -> GAS {
    let access = match len_bytes {
        1 => AccessSize::ByteAccess,
        2 => AccessSize::WordAccess,
        _ => AccessSize::DwordAccess,
    };
    GAS::new(
        GasSpace::SystemIo,
        len_bytes * 8,
        0,
        access,
        u64::from(port),
    )
}

fn fadt(facs_address: u64, dsdt_address: u64) -> acpi_tables::fadt::FADT {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .firmware_ctrl_32(facs_address as u32)
        .dsdt_32(dsdt_address as u32)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        // No sleep button; the power button is a fixed feature because
        // the PwrButton flag stays clear.
        .flag(Flags::SlpButton)
        .flag(Flags::TmrValExt)
        .flag(Flags::ResetRegSup);
    fadt.x_dsdt = dsdt_address.into();
    fadt.sci_int = (SCI_IRQ as u16).into();
    // No SMI command port: the platform is always in ACPI mode.
    fadt.smi_cmd = 0.into();
    fadt.pm1a_evt_blk = u32::from(PM1A_EVT_PORT).into();
    fadt.pm1a_cnt_blk = u32::from(PM1A_CNT_PORT).into();
    fadt.pm_tmr_blk = u32::from(PM_TMR_PORT).into();
    fadt.pm1_evt_len = PM1_EVT_LEN;
    fadt.pm1_cnt_len = PM1_CNT_LEN;
    fadt.pm_tmr_len = PM_TMR_LEN;
    fadt.x_pm1a_evt_blk = io_register(PM1A_EVT_PORT, PM1_EVT_LEN);
    fadt.x_pm1a_cnt_blk = io_register(PM1A_CNT_PORT, PM1_CNT_LEN);
    fadt.x_pm_tmr_blk = io_register(PM_TMR_PORT, PM_TMR_LEN);
    // IA-PC boot architecture: no VGA (bit 2). The 8042 bit (1) stays
    // clear, so Linux does not probe a keyboard controller that has
    // nothing behind it; the reset line at port 0x64 works regardless.
    fadt.iapc_boot_arch = (1u16 << 2).into();
    fadt.reset_reg = io_register(RESET_CONTROL_PORT, 1);
    fadt.reset_value = RESET_CONTROL_VALUE;
    fadt.finalize()
}

fn dsdt() -> Sdt {
    let mut body = Vec::new();

    // \_S5: SLP_TYPa, SLP_TYPb, reserved, reserved.
    let s5_type = S5_SLEEP_TYPE as u8;
    aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&s5_type, &s5_type, &0u8, &0u8]),
    )
    .to_aml_bytes(&mut body);

    let mmio_end = (PCI_MMIO_START + PCI_MMIO_SIZE - 1) as u32;
    let config_end = PCI_CONFIG_PORT_BASE + PCI_CONFIG_PORT_COUNT - 1;
    let bus_numbers = aml::AddressSpace::new_bus_number(0u16, 0xffu16);
    let config_ports = aml::IO::new(
        PCI_CONFIG_PORT_BASE,
        PCI_CONFIG_PORT_BASE,
        1,
        PCI_CONFIG_PORT_COUNT as u8,
    );
    let ports_below = aml::AddressSpace::new_io(0u16, PCI_CONFIG_PORT_BASE - 1, None);
    let ports_above = aml::AddressSpace::new_io(config_end + 1, 0xffffu16, None);
    let mmio_window = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO_START as u32,
        mmio_end,
        None,
    );
    let resources = aml::ResourceTemplate::new(vec![
        &bus_numbers,
        &config_ports,
        &ports_below,
        &ports_above,
        &mmio_window,
    ]);
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A03"));
    let adr = aml::Name::new("_ADR".into(), &0u8);
    let seg = aml::Name::new("_SEG".into(), &0u8);
    let uid = aml::Name::new("_UID".into(), &0u8);
    let bbn = aml::Name::new("_BBN".into(), &0u8);
    let crs = aml::Name::new("_CRS".into(), &resources);
    let pci0 = aml::Device::new("PCI0".into(), vec![&hid, &adr, &seg, &uid, &bbn, &crs]);
    aml::Scope::new("_SB_".into(), vec![&pci0]).to_aml_bytes(&mut body);

    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    dsdt.append_slice(&body);
    dsdt
}

const MADT_PCAT_COMPAT: u32 = 1;
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_INTERRUPT_OVERRIDE: u8 = 2;
const MADT_LOCAL_APIC_NMI: u8 = 4;
const MADT_LAPIC_ENABLED: u32 = 1;
// MPS INTI flags: active high (01), level triggered (11 << 2).
const MPS_ACTIVE_HIGH_LEVEL: u16 = 0x000d;
// Active high, edge triggered.
const MPS_ACTIVE_HIGH_EDGE: u16 = 0x0005;

fn madt(vcpus: u8) -> Sdt {
    let mut body = Vec::new();
    body.extend_from_slice(&(LAPIC_START as u32).to_le_bytes());
    // PCAT_COMPAT: the dual 8259 PICs exist (KVM emulates them).
    body.extend_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    for cpu in 0..vcpus {
        // Processor UID, APIC ID, flags.
        body.extend_from_slice(&[MADT_LOCAL_APIC, 8, cpu, cpu]);
        body.extend_from_slice(&MADT_LAPIC_ENABLED.to_le_bytes());
    }
    // IOAPIC 0 at its address, GSI base 0.
    body.extend_from_slice(&[MADT_IO_APIC, 12, 0, 0]);
    body.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // The SCI is level triggered and active high (the ACPI default would
    // be active low).
    body.extend_from_slice(&[MADT_INTERRUPT_OVERRIDE, 10, 0, SCI_IRQ as u8]);
    body.extend_from_slice(&SCI_IRQ.to_le_bytes());
    body.extend_from_slice(&MPS_ACTIVE_HIGH_LEVEL.to_le_bytes());
    // LINT1 of every processor (0xff) is the NMI input.
    body.extend_from_slice(&[MADT_LOCAL_APIC_NMI, 6, 0xff]);
    body.extend_from_slice(&MPS_ACTIVE_HIGH_EDGE.to_le_bytes());
    body.push(1);

    let mut madt = Sdt::new(*b"APIC", 36, 5, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    madt.append_slice(&body);
    madt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
    }

    #[test]
    fn madt_lists_every_vcpu_and_sums_to_zero() {
        let madt = madt(3);
        let bytes = madt.as_slice();
        assert_eq!(&bytes[0..4], b"APIC");
        assert_eq!(
            u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(checksum(bytes), 0);
        let lapic_ids: Vec<u8> = bytes[44..]
            .chunks(8)
            .take(3)
            .map(|entry| entry[3])
            .collect();
        assert_eq!(lapic_ids, vec![0, 1, 2]);
    }

    #[test]
    fn dsdt_contains_s5_and_root_bridge() {
        let dsdt = dsdt();
        let bytes = dsdt.as_slice();
        assert_eq!(checksum(bytes), 0);
        assert!(bytes.windows(4).any(|w| w == b"_S5_"));
        assert!(bytes.windows(4).any(|w| w == b"PCI0"));
    }

    #[test]
    fn fadt_points_at_pm_blocks() {
        let bytes = aml_bytes(&fadt(0xe0040, 0xe0080));
        assert_eq!(checksum(&bytes), 0);
        // PM1a_EVT_BLK at offset 56, PM1a_CNT_BLK at 64, SCI_INT at 46.
        assert_eq!(u32::from_le_bytes(bytes[56..60].try_into().unwrap()), 0x600);
        assert_eq!(u32::from_le_bytes(bytes[64..68].try_into().unwrap()), 0x604);
        assert_eq!(u16::from_le_bytes(bytes[46..48].try_into().unwrap()), 9);
    }
}

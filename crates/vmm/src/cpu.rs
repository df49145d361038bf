//! x86_64 vCPU set-up: CPUID, MSRs, and the register state of the Linux
//! 64-bit boot entry (Documentation/arch/x86/boot.rst, "64-bit boot
//! protocol").
//!
//! Only the boot vCPU gets register state; the others start in KVM's
//! wait-for-SIPI state and are brought up by the guest through its LAPIC.

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment,
};
use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{
    BOOT_STACK_POINTER, GDT_START, IDT_START, PD_START, PDPT_START, PML4_START, ZERO_PAGE_START,
};
use crate::memory::GuestMemoryMmap;

/// Errors while configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// KVM_GET_SUPPORTED_CPUID failed.
    #[error("cannot read the CPUID leaves KVM supports")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    /// A vCPU ioctl failed.
    #[error("vCPU {vcpu}: {what} failed")]
    Ioctl {
        /// vCPU index.
        vcpu: u8,
        /// The operation, e.g. "KVM_SET_CPUID2".
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM accepted fewer MSRs than were given.
    #[error("vCPU {vcpu}: KVM accepted {accepted} of {given} boot MSRs")]
    Msrs {
        /// vCPU index.
        vcpu: u8,
        /// MSRs written.
        accepted: usize,
        /// MSRs given.
        given: usize,
    },
    /// Writing the boot page tables or GDT into guest memory failed.
    #[error("cannot write boot page tables into guest memory")]
    WriteBootTables(#[source] vm_memory::GuestMemoryError),
}

const CPUID_HYPERVISOR: u32 = 1 << 31;
const CPUID_HTT: u32 = 1 << 28;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_SIZE_IDENTIFIERS: u32 = 0x8000_0008;
const LEAF_AMD_TOPOLOGY: u32 = 0x8000_001e;
const TOPOLOGY_LEVEL_SMT: u32 = 1;
const TOPOLOGY_LEVEL_CORE: u32 = 2;

/// Reads KVM's supported CPUID leaves once for all vCPUs.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, CpuError> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(CpuError::SupportedCpuid)
}

/// Adapts the supported CPUID to vCPU `index` of `count`: one package
/// with `count` cores of one thread each, APIC ID = index. The KVM
/// paravirtual leaves (0x4000_0000, kvmclock among them) come from KVM's
/// list unchanged.
pub fn cpuid_for_vcpu(supported: &CpuId, index: u8, count: u8) -> CpuId {
    let mut cpuid = supported.clone();
    let apic_id = u32::from(index);
    let count = u32::from(count);
    // Bits of the APIC ID that number cores within the package.
    let core_bits = u32::BITS - (count.max(1) - 1).leading_zeros();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (apic_id << 24) | (count << 16);
                entry.ecx |= CPUID_HYPERVISOR;
                if count > 1 {
                    entry.edx |= CPUID_HTT;
                } else {
                    entry.edx &= !CPUID_HTT;
                }
            }
            4 => {
                // Cores per package minus one, in EAX[31:26].
                entry.eax = (entry.eax & 0x03ff_ffff) | ((count - 1) << 26);
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                entry.edx = apic_id;
                (entry.eax, entry.ebx, entry.ecx) = match entry.index {
                    0 => (0, 1, TOPOLOGY_LEVEL_SMT << 8),
                    1 => (core_bits, count, TOPOLOGY_LEVEL_CORE << 8 | 1),
                    level => (0, 0, level),
                };
            }
            LEAF_AMD_SIZE_IDENTIFIERS => {
                // Number of cores minus one, and the APIC ID bits they use.
                entry.ecx = (entry.ecx & !0xf0ff) | (core_bits << 12) | (count - 1);
            }
            LEAF_AMD_TOPOLOGY => {
                entry.eax = apic_id;
                entry.ebx = apic_id & 0xff;
                entry.ecx = 0;
            }
            _ => {}
        }
    }
    cpuid
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 1;

/// Sets the MSRs every vCPU starts with.
pub fn setup_msrs(vcpu: &VcpuFd, index: u8) -> Result<(), CpuError> {
    let entries: Vec<kvm_msr_entry> = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect();
    let msrs = Msrs::from_entries(&entries).expect("10 entries fit the MSR list");
    // KVM stops at the first MSR it rejects and returns how many it set.
    let accepted = vcpu.set_msrs(&msrs).map_err(|source| CpuError::Ioctl {
        vcpu: index,
        what: "KVM_SET_MSRS",
        source,
    })?;
    if accepted != entries.len() {
        return Err(CpuError::Msrs {
            vcpu: index,
            accepted,
            given: entries.len(),
        });
    }
    Ok(())
}

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

// GDT entries: two null, 64-bit code, flat data, TSS, so that the code
// selector is __BOOT_CS = 0x10 and the data selector __BOOT_DS = 0x18, as
// the boot protocol requires.
const GDT: [u64; 5] = [
    0,
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x008f_8b00_0000_ffff,
];

fn segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: {
            let limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
            // Granularity bit: the limit counts 4 KiB pages.
            if entry & (1 << 55) != 0 {
                (limit << 12) | 0xfff
            } else {
                limit
            }
        },
        selector: u16::from(table_index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: ((entry >> 55) & 1) as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Writes the boot GDT and identity-mapping page tables (the low 4 GiB in
/// 2 MiB pages) into guest memory.
pub fn write_boot_tables(memory: &GuestMemoryMmap) -> Result<(), CpuError> {
    for (i, entry) in GDT.iter().enumerate() {
        memory
            .write_obj(*entry, GuestAddress(GDT_START + i as u64 * 8))
            .map_err(CpuError::WriteBootTables)?;
    }
    memory
        .write_obj(0u64, GuestAddress(IDT_START))
        .map_err(CpuError::WriteBootTables)?;

    const PRESENT_WRITABLE: u64 = 0x3;
    const HUGE_PAGE: u64 = 0x80;
    memory
        .write_obj(PDPT_START | PRESENT_WRITABLE, GuestAddress(PML4_START))
        .map_err(CpuError::WriteBootTables)?;
    for directory in 0..4u64 {
        let pd = PD_START + directory * 0x1000;
        memory
            .write_obj(
                pd | PRESENT_WRITABLE,
                GuestAddress(PDPT_START + directory * 8),
            )
            .map_err(CpuError::WriteBootTables)?;
        for entry in 0..512u64 {
            let address = (directory << 30) | (entry << 21);
            memory
                .write_obj(
                    address | PRESENT_WRITABLE | HUGE_PAGE,
                    GuestAddress(pd + entry * 8),
                )
                .map_err(CpuError::WriteBootTables)?;
        }
    }
    Ok(())
}

/// Puts the boot vCPU in 64-bit mode at `entry` with RSI pointing at the
/// zero page, as the 64-bit boot protocol requires.
pub fn setup_boot_registers(vcpu: &VcpuFd, entry: u64) -> Result<(), CpuError> {
    let ioctl = |what, source| CpuError::Ioctl {
        vcpu: 0,
        what,
        source,
    };
    let mut sregs = vcpu.get_sregs().map_err(|e| ioctl("KVM_GET_SREGS", e))?;
    let code = segment_from_gdt(GDT[2], 2);
    let data = segment_from_gdt(GDT[3], 3);
    let tss = segment_from_gdt(GDT[4], 4);
    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    // Set CR0 outright: its reset value has the cache-disable bits set.
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.cr3 = PML4_START;
    sregs.cr4 = X86_CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)
        .map_err(|e| ioctl("KVM_SET_SREGS", e))?;

    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(|e| ioctl("KVM_SET_REGS", e))?;

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|e| ioctl("KVM_SET_FPU", e))
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Wires LINT0 to the 8259 (ExtINT) and LINT1 to NMI, as firmware does, so
/// interrupts reach the boot CPU before the guest programs its APIC.
pub fn setup_lapic(vcpu: &VcpuFd, index: u8) -> Result<(), CpuError> {
    let ioctl = |what, source| CpuError::Ioctl {
        vcpu: index,
        what,
        source,
    };
    let mut lapic = vcpu.get_lapic().map_err(|e| ioctl("KVM_GET_LAPIC", e))?;
    let set_mode = |registers: &mut [std::os::raw::c_char; 1024], offset: usize, mode: u32| {
        let mut bytes = [0u8; 4];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = registers[offset + i] as u8;
        }
        let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (i, byte) in value.to_le_bytes().iter().enumerate() {
            registers[offset + i] = *byte as std::os::raw::c_char;
        }
    };
    set_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic)
        .map_err(|e| ioctl("KVM_SET_LAPIC", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_64_bit() {
        let code = segment_from_gdt(GDT[2], 2);
        assert_eq!(
            (code.selector, code.l, code.db, code.type_),
            (0x10, 1, 0, 0xb)
        );
        assert_eq!(code.limit, 0xffff_ffff);
    }

    #[test]
    fn data_segment_is_flat() {
        let data = segment_from_gdt(GDT[3], 3);
        assert_eq!(
            (data.selector, data.base, data.limit, data.db),
            (0x18, 0, 0xffff_ffff, 1)
        );
    }
}

//! Interrupt routing: KVM's GSI routing table with the ISA defaults plus
//! one MSI route per allocated vector, and the per-vector interrupt object
//! devices signal.
//!
//! Every MSI-X vector owns a GSI (24 and up, above the IOAPIC pins) and an
//! eventfd registered with KVM as an irqfd on that GSI, so a device thread
//! raises an interrupt with one eventfd write and no vCPU exit. Masking is
//! kept in user space: a masked vector records the interrupt as pending
//! instead of writing the eventfd (PCI Local Bus 3.0 §6.8.3.4).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KvmIrqRouting, kvm_irq_routing_entry,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::lock_device;

/// First GSI handed out for MSI vectors; 0..24 are the IOAPIC pins.
pub const FIRST_MSI_GSI: u32 = 24;
/// GSIs KVM supports in its routing table on x86.
const MAX_GSI: u32 = 1024;

const KVM_IRQCHIP_PIC_MASTER: u32 = 0;
const KVM_IRQCHIP_PIC_SLAVE: u32 = 1;
const KVM_IRQCHIP_IOAPIC: u32 = 2;
const IOAPIC_PINS: u32 = 24;

/// Errors while changing interrupt routing.
#[derive(Debug, thiserror::Error)]
pub enum IrqError {
    /// All GSIs are in use.
    #[error("no free GSI for an MSI vector (limit {MAX_GSI})")]
    OutOfGsis,
    /// KVM_SET_GSI_ROUTING failed.
    #[error("cannot set the interrupt routing table")]
    SetRouting(#[source] kvm_ioctls::Error),
    /// Creating or registering an irqfd failed.
    #[error("cannot register irqfd for GSI {gsi}")]
    RegisterIrqfd {
        /// The GSI.
        gsi: u32,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The VM's GSI routing table.
pub struct IrqRouting {
    vm: Arc<VmFd>,
    msi_routes: Mutex<BTreeMap<u32, (u64, u32)>>,
    next_gsi: AtomicU32,
}

impl IrqRouting {
    /// Creates the table and installs the ISA defaults.
    pub fn new(vm: Arc<VmFd>) -> Result<IrqRouting, IrqError> {
        let routing = IrqRouting {
            vm,
            msi_routes: Mutex::new(BTreeMap::new()),
            next_gsi: AtomicU32::new(FIRST_MSI_GSI),
        };
        routing.commit(&lock_device(&routing.msi_routes))?;
        Ok(routing)
    }

    /// Creates a new MSI vector with its own GSI and irqfd. It starts
    /// masked with no route.
    pub fn allocate_vector(&self) -> Result<Arc<MsiVector>, IrqError> {
        let gsi = self.next_gsi.fetch_add(1, Ordering::Relaxed);
        if gsi >= MAX_GSI {
            return Err(IrqError::OutOfGsis);
        }
        let irqfd = EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|source| IrqError::RegisterIrqfd { gsi, source })?;
        self.vm
            .register_irqfd(&irqfd, gsi)
            .map_err(|e| IrqError::RegisterIrqfd {
                gsi,
                source: std::io::Error::from_raw_os_error(e.errno()),
            })?;
        Ok(Arc::new(MsiVector {
            gsi,
            irqfd,
            masked: AtomicBool::new(true),
            pending: AtomicBool::new(false),
        }))
    }

    /// Routes `gsi` to the MSI message `address`/`data`.
    pub fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> Result<(), IrqError> {
        let mut routes = lock_device(&self.msi_routes);
        if routes.get(&gsi) == Some(&(address, data)) {
            return Ok(());
        }
        routes.insert(gsi, (address, data));
        self.commit(&routes)
    }

    fn commit(&self, msi_routes: &BTreeMap<u32, (u64, u32)>) -> Result<(), IrqError> {
        let mut entries = Vec::new();
        // KVM's own default table: ISA IRQs 0..16 reach both PICs and the
        // IOAPIC, 16..24 only the IOAPIC. Setting a table replaces it, so
        // it must be repeated here.
        for gsi in 0..IOAPIC_PINS {
            if gsi < 16 {
                let chip = if gsi < 8 {
                    KVM_IRQCHIP_PIC_MASTER
                } else {
                    KVM_IRQCHIP_PIC_SLAVE
                };
                entries.push(irqchip_entry(gsi, chip, gsi % 8));
            }
            entries.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
        }
        for (&gsi, &(address, data)) in msi_routes {
            let mut entry = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            entry.u.msi.address_lo = address as u32;
            entry.u.msi.address_hi = (address >> 32) as u32;
            entry.u.msi.data = data;
            entries.push(entry);
        }
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|_| IrqError::SetRouting(kvm_ioctls::Error::new(libc::E2BIG)))?;
        self.vm
            .set_gsi_routing(&table)
            .map_err(IrqError::SetRouting)
    }
}

fn irqchip_entry(gsi: u32, irqchip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    entry.u.irqchip.irqchip = irqchip;
    entry.u.irqchip.pin = pin;
    entry
}

/// One MSI vector: an irqfd plus user-space mask and pending bits.
pub struct MsiVector {
    gsi: u32,
    irqfd: EventFd,
    masked: AtomicBool,
    pending: AtomicBool,
}

impl MsiVector {
    /// Raises the interrupt, or marks it pending while masked.
    pub fn trigger(&self) {
        if self.masked.load(Ordering::Acquire) {
            self.pending.store(true, Ordering::Release);
            return;
        }
        // The counter saturates only after 2^64 - 1 unread writes, and KVM
        // reads it on every injection.
        let _ = self.irqfd.write(1);
    }

    /// Masks or unmasks the vector; unmasking delivers a pending interrupt.
    pub fn set_masked(&self, masked: bool) {
        self.masked.store(masked, Ordering::Release);
        if !masked && self.pending.swap(false, Ordering::AcqRel) {
            let _ = self.irqfd.write(1);
        }
    }

    /// Returns whether an interrupt arrived while the vector was masked.
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Returns the vector's GSI.
    pub fn gsi(&self) -> u32 {
        self.gsi
    }
}

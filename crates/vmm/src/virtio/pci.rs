//! The virtio PCI transport, modern interface only (virtio 1.2 §4.1).
//!
//! Everything lives in BAR 0 (32-bit memory, 16 KiB):
//!
//! ```text
//! 0x0000  common configuration (0x38 bytes)
//! 0x0800  ISR status (1 byte)
//! 0x1000  device-specific configuration
//! 0x2000  queue notifications, 4 bytes per queue (ioeventfd, no exit)
//! 0x3000  MSI-X table, 0x3800 pending bit array
//! ```
//!
//! The driver-visible registers are handled on the vCPU thread that traps
//! the access. The queues themselves are served by the device's worker
//! thread once the driver sets DRIVER_OK.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::{
    ActivateContext, ActiveQueue, QueueInterrupt, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC, VirtioDevice,
};
use crate::irq::{IrqError, IrqRouting};
use crate::memory::GuestMemoryMmap;
use crate::pci::PciDevice;
use crate::pci::config::{PciConfiguration, PciIdentity};
use crate::pci::msix::MsixTable;
use crate::warnings::WarningBudget;

/// Size of BAR 0.
pub const BAR_SIZE: u32 = 0x4000;
const COMMON_CONFIG_OFFSET: u64 = 0x0000;
const COMMON_CONFIG_LEN: u64 = 0x38;
const ISR_OFFSET: u64 = 0x0800;
const ISR_LEN: u64 = 1;
const DEVICE_CONFIG_OFFSET: u64 = 0x1000;
const DEVICE_CONFIG_LEN: u64 = 0x1000;
const NOTIFY_OFFSET: u64 = 0x2000;
const NOTIFY_OFF_MULTIPLIER: u32 = 4;
const MSIX_TABLE_OFFSET: u64 = 0x3000;
const MSIX_PBA_OFFSET: u64 = 0x3800;

const VIRTIO_PCI_VENDOR_ID: u16 = 0x1af4;
const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;
const PCI_CAP_ID_VENDOR: u8 = 0x09;
const PCI_CAP_ID_MSIX: u8 = 0x11;
const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;
/// "No vector" value of the MSI-X vector registers.
const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;

const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;
const STATUS_DEVICE_NEEDS_RESET: u8 = 64;

/// Per-queue registers as the driver programs them.
#[derive(Clone, Copy)]
pub(super) struct QueueRegisters {
    pub(super) max_size: u16,
    pub(super) size: u16,
    pub(super) msix_vector: u16,
    pub(super) enabled: bool,
    pub(super) desc: u64,
    pub(super) driver: u64,
    pub(super) device: u64,
}

impl QueueRegisters {
    pub(super) fn new(max_size: u16) -> QueueRegisters {
        QueueRegisters {
            max_size,
            size: max_size,
            msix_vector: VIRTIO_MSI_NO_VECTOR,
            enabled: false,
            desc: 0,
            driver: 0,
            device: 0,
        }
    }
}

/// Placement of a device: the address of BAR 0 and the name used in logs.
pub struct TransportPlacement {
    /// Address of BAR 0 in the PCI MMIO window.
    pub bar_address: u32,
    /// Name used in log messages, such as `viornd`.
    pub name: String,
}

/// A virtio device behind the PCI transport.
pub struct VirtioPciDevice {
    name: String,
    config: PciConfiguration,
    msix_capability: usize,
    pci_cfg_capability: usize,
    device: Box<dyn VirtioDevice>,
    msix: MsixTable,
    vm: Arc<VmFd>,
    memory: Arc<GuestMemoryMmap>,
    queues: Vec<QueueRegisters>,
    queue_select: u16,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    config_msix_vector: u16,
    status: u8,
    config_generation: u8,
    isr: Arc<AtomicU8>,
    // Notification eventfds registered with KVM while the device runs,
    // with the address each one is registered at.
    ioeventfds: Vec<(EventFd, u64)>,
    // What the driver did wrong, logged a limited number of times.
    warnings: WarningBudget,
}

impl VirtioPciDevice {
    /// Wraps `device` in the transport with BAR 0 at `placement`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        placement: TransportPlacement,
        vm: Arc<VmFd>,
        routing: Arc<IrqRouting>,
        memory: Arc<GuestMemoryMmap>,
    ) -> Result<VirtioPciDevice, IrqError> {
        let device_type = device.device_type();
        let queues: Vec<QueueRegisters> = device
            .queue_max_sizes()
            .iter()
            .map(|&max| QueueRegisters::new(max))
            .collect();
        // One vector per queue plus one for configuration changes.
        let vector_count = queues.len() as u16 + 1;
        let msix = MsixTable::new(routing, vector_count)?;

        let mut config = PciConfiguration::new(PciIdentity {
            vendor_id: VIRTIO_PCI_VENDOR_ID,
            device_id: VIRTIO_PCI_DEVICE_ID_BASE + device_type as u16,
            // Revision 1: a modern-only device (virtio 1.2 §4.1.2.1).
            revision: 1,
            class_code: class_code(device_type),
            subsystem_vendor_id: VIRTIO_PCI_VENDOR_ID,
            subsystem_id: 0x40,
        });
        config.add_memory_bar(0, placement.bar_address, BAR_SIZE);
        for (cfg_type, offset, len) in [
            (
                VIRTIO_PCI_CAP_COMMON_CFG,
                COMMON_CONFIG_OFFSET,
                COMMON_CONFIG_LEN,
            ),
            (VIRTIO_PCI_CAP_ISR_CFG, ISR_OFFSET, ISR_LEN),
            (
                VIRTIO_PCI_CAP_DEVICE_CFG,
                DEVICE_CONFIG_OFFSET,
                DEVICE_CONFIG_LEN,
            ),
        ] {
            config.add_capability(PCI_CAP_ID_VENDOR, &virtio_cap(cfg_type, offset, len), &[]);
        }
        let mut notify = virtio_cap(
            VIRTIO_PCI_CAP_NOTIFY_CFG,
            NOTIFY_OFFSET,
            u64::from(NOTIFY_OFF_MULTIPLIER) * queues.len() as u64,
        );
        notify[0] += 4;
        notify.extend_from_slice(&NOTIFY_OFF_MULTIPLIER.to_le_bytes());
        config.add_capability(PCI_CAP_ID_VENDOR, &notify, &[]);
        let pci_cfg_capability = add_pci_cfg_capability(&mut config);
        let msix_capability = add_msix_capability(&mut config, vector_count);

        Ok(VirtioPciDevice {
            warnings: WarningBudget::default(),
            name: placement.name,
            config,
            msix_capability,
            pci_cfg_capability,
            device,
            msix,
            vm,
            memory,
            queues,
            queue_select: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            config_msix_vector: VIRTIO_MSI_NO_VECTOR,
            status: 0,
            config_generation: 0,
            isr: Arc::new(AtomicU8::new(0)),
            ioeventfds: Vec::new(),
        })
    }

    fn offered_features(&self) -> u64 {
        self.device.device_features()
            | VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_INDIRECT_DESC
            | VIRTIO_RING_F_EVENT_IDX
    }

    fn selected_queue(&mut self) -> Option<&mut QueueRegisters> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn read_common(&mut self, offset: u64, data: &mut [u8]) {
        let queue = self.queues.get(self.queue_select as usize).copied();
        let value: u64 = match offset {
            0x00 => u64::from(self.device_feature_select),
            0x04 => match self.device_feature_select {
                0 => self.offered_features() & 0xffff_ffff,
                1 => self.offered_features() >> 32,
                _ => 0,
            },
            0x08 => u64::from(self.driver_feature_select),
            0x0c => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            0x10 => u64::from(self.config_msix_vector),
            0x12 => self.queues.len() as u64,
            0x14 => u64::from(self.status),
            0x15 => u64::from(self.config_generation),
            0x16 => u64::from(self.queue_select),
            0x18 => queue.map_or(0, |q| u64::from(q.size)),
            0x1a => queue.map_or(u64::from(VIRTIO_MSI_NO_VECTOR), |q| {
                u64::from(q.msix_vector)
            }),
            0x1c => queue.map_or(0, |q| u64::from(q.enabled)),
            // queue_notify_off: queue i notifies at NOTIFY_OFFSET + 4 * i.
            0x1e => u64::from(self.queue_select),
            0x20 => queue.map_or(0, |q| q.desc),
            0x24 => queue.map_or(0, |q| q.desc >> 32),
            0x28 => queue.map_or(0, |q| q.driver),
            0x2c => queue.map_or(0, |q| q.driver >> 32),
            0x30 => queue.map_or(0, |q| q.device),
            0x34 => queue.map_or(0, |q| q.device >> 32),
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        data.copy_from_slice(&bytes[..data.len().min(8)]);
    }

    fn write_common(&mut self, offset: u64, data: &[u8]) {
        let mut bytes = [0u8; 8];
        bytes[..data.len()].copy_from_slice(data);
        let value = u64::from_le_bytes(bytes);
        let low = |old: u64| (old & !0xffff_ffff) | (value & 0xffff_ffff);
        let high = |old: u64| (old & 0xffff_ffff) | (value << 32);
        match offset {
            0x00 => self.device_feature_select = value as u32,
            0x08 => self.driver_feature_select = value as u32,
            0x0c => match self.driver_feature_select {
                0 => self.driver_features = low(self.driver_features),
                1 => self.driver_features = high(self.driver_features),
                _ => {}
            },
            0x10 => self.config_msix_vector = value as u16,
            0x14 => self.write_status(value as u8),
            0x16 => self.queue_select = value as u16,
            0x18 => {
                if let Some(q) = self.selected_queue() {
                    q.size = value as u16;
                }
            }
            0x1a => {
                let vector_count = self.msix.len() as u64;
                if let Some(q) = self.selected_queue() {
                    // A vector the table does not have reads back as "no
                    // vector", telling the driver the assignment failed.
                    q.msix_vector = if value < vector_count {
                        value as u16
                    } else {
                        VIRTIO_MSI_NO_VECTOR
                    };
                }
            }
            0x1c => {
                if let Some(q) = self.selected_queue() {
                    q.enabled = value & 1 == 1;
                }
            }
            0x20 | 0x24 | 0x28 | 0x2c | 0x30 | 0x34 => {
                let wide = data.len() == 8;
                if let Some(q) = self.selected_queue() {
                    let field = match offset & !0x7 {
                        0x20 => &mut q.desc,
                        0x28 => &mut q.driver,
                        _ => &mut q.device,
                    };
                    *field = match (offset % 8, wide) {
                        (0, true) => value,
                        (0, false) => low(*field),
                        _ => high(*field),
                    };
                }
            }
            _ => {}
        }
    }

    fn write_status(&mut self, status: u8) {
        if status == 0 {
            self.reset();
            return;
        }
        let newly_set = status & !self.status;
        let mut status = status;
        if newly_set & STATUS_FEATURES_OK != 0 {
            let unknown = self.driver_features & !self.offered_features();
            if unknown != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                // A FEATURES_OK bit left clear means the feature set is
                // unusable (virtio 1.2 §3.1.1).
                self.warnings.warn(
                    &self.name,
                    format_args!("driver features 0x{:x} rejected", self.driver_features),
                );
                status &= !STATUS_FEATURES_OK;
            }
        }
        self.status = status;
        if newly_set & STATUS_DRIVER_OK != 0 && status & STATUS_FEATURES_OK != 0 {
            self.activate();
        }
    }

    fn activate(&mut self) {
        match self.build_active_queues() {
            Ok(queues) => {
                let context = ActivateContext {
                    memory: self.memory.clone(),
                    acked_features: self.driver_features,
                    queues,
                };
                if let Err(e) = self.device.activate(context) {
                    self.warnings
                        .warn(&self.name, format_args!("cannot activate: {e}"));
                    self.unregister_ioeventfds();
                    self.status |= STATUS_DEVICE_NEEDS_RESET;
                }
            }
            Err(reason) => {
                self.warnings
                    .warn(&self.name, format_args!("cannot activate: {reason}"));
                self.unregister_ioeventfds();
                self.status |= STATUS_DEVICE_NEEDS_RESET;
            }
        }
    }

    fn build_active_queues(&mut self) -> Result<Vec<ActiveQueue>, String> {
        let bar = self.config.bar_address(0).ok_or("memory decoding is off")?;
        let event_idx = self.driver_features & VIRTIO_RING_F_EVENT_IDX != 0;
        let mut active = Vec::with_capacity(self.queues.len());
        for index in 0..self.queues.len() {
            let registers = self.queues[index];
            let queue = build_queue(&registers, event_idx, &self.memory)
                .map_err(|e| format!("queue {index}: {e}"))?;
            let notify = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| e.to_string())?;
            let address = bar + NOTIFY_OFFSET + u64::from(NOTIFY_OFF_MULTIPLIER) * index as u64;
            self.vm
                .register_ioevent(&notify, &IoEventAddress::Mmio(address), NoDatamatch)
                .map_err(|e| format!("queue {index}: cannot register ioeventfd: {e}"))?;
            self.ioeventfds
                .push((notify.try_clone().map_err(|e| e.to_string())?, address));
            let vector = match registers.msix_vector {
                VIRTIO_MSI_NO_VECTOR => None,
                vector => self.msix.vector(vector),
            };
            active.push(ActiveQueue {
                queue,
                notify,
                interrupt: QueueInterrupt::new(vector, self.isr.clone()),
            });
        }
        Ok(active)
    }

    fn unregister_ioeventfds(&mut self) {
        for (eventfd, address) in self.ioeventfds.drain(..) {
            if let Err(e) =
                self.vm
                    .unregister_ioevent(&eventfd, &IoEventAddress::Mmio(address), NoDatamatch)
            {
                log::warn!("{}: cannot unregister ioeventfd: {e}", self.name);
            }
        }
    }

    /// Stops the device's worker, as a reset by the driver would.
    pub fn stop(&mut self) {
        self.reset();
    }

    fn reset(&mut self) {
        self.device.reset();
        self.unregister_ioeventfds();
        for queue in &mut self.queues {
            *queue = QueueRegisters::new(queue.max_size);
        }
        self.queue_select = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.config_msix_vector = VIRTIO_MSI_NO_VECTOR;
        self.status = 0;
        self.isr.store(0, Ordering::Release);
    }

    // A notification written through the trap path (no ioeventfd yet, or
    // registration failed): forward it to the queue's eventfd.
    fn notify_queue(&mut self, offset: u64) {
        let index = (offset / u64::from(NOTIFY_OFF_MULTIPLIER)) as usize;
        if let Some((eventfd, _)) = self.ioeventfds.get(index) {
            let _ = eventfd.write(1);
        }
    }

    fn access_bar(&mut self, offset: u64, access: BarAccess) {
        match (offset, access) {
            // Only naturally aligned accesses of the register's width or of
            // 32 bits for 64-bit registers (virtio 1.2 §4.1.3.1).
            (COMMON_CONFIG_OFFSET..0x38, BarAccess::Read(data)) => self.read_common(offset, data),
            (COMMON_CONFIG_OFFSET..0x38, BarAccess::Write(data)) => self.write_common(offset, data),
            (ISR_OFFSET, BarAccess::Read(data)) => {
                data.fill(0);
                // Reading ISR clears it (virtio 1.2 §4.1.4.5).
                data[0] = self.isr.swap(0, Ordering::AcqRel);
            }
            (DEVICE_CONFIG_OFFSET..0x2000, BarAccess::Read(data)) => {
                self.device.read_config(offset - DEVICE_CONFIG_OFFSET, data);
            }
            (DEVICE_CONFIG_OFFSET..0x2000, BarAccess::Write(data)) => {
                self.device
                    .write_config(offset - DEVICE_CONFIG_OFFSET, data);
            }
            (NOTIFY_OFFSET..MSIX_TABLE_OFFSET, BarAccess::Write(_)) => {
                self.notify_queue(offset - NOTIFY_OFFSET);
            }
            (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET, BarAccess::Read(data)) => {
                self.msix.read_table(offset - MSIX_TABLE_OFFSET, data);
            }
            (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET, BarAccess::Write(data)) => {
                self.msix.write_table(offset - MSIX_TABLE_OFFSET, data);
            }
            (MSIX_PBA_OFFSET.., BarAccess::Read(data)) => {
                self.msix.read_pba(offset - MSIX_PBA_OFFSET, data);
            }
            _ => {}
        }
    }

    // The VIRTIO_PCI_CAP_PCI_CFG window gives configuration-space access to
    // BAR contents at the offset and length the driver put in the
    // capability. Returns that offset and length, or None when they do not
    // select a 1-, 2- or 4-byte access to BAR 0.
    fn pci_cfg_window_target(&self) -> Option<(u64, usize)> {
        let cap = self.pci_cfg_capability;
        let bar = self.config.read_byte(cap + 4);
        let offset = u64::from(self.config.read_register(cap + 8));
        let length = self.config.read_register(cap + 12) as usize;
        if bar != 0 || !matches!(length, 1 | 2 | 4) {
            return None;
        }
        Some((offset, length))
    }

    // Fills the window's data field from the BAR contents it selects.
    fn read_pci_cfg_window(&mut self) {
        let Some((offset, length)) = self.pci_cfg_window_target() else {
            return;
        };
        let mut window = [0u8; 4];
        self.access_bar(offset, BarAccess::Read(&mut window[..length]));
        self.config.write_raw(self.pci_cfg_capability + 16, &window);
    }

    // Writes `data`, cut to the window's length, to the BAR contents the
    // window selects.
    fn write_pci_cfg_window(&mut self, data: &[u8]) {
        let Some((offset, length)) = self.pci_cfg_window_target() else {
            return;
        };
        let len = length.min(data.len());
        self.access_bar(offset, BarAccess::Write(&data[..len]));
    }
}

/// A driver access to BAR 0: the bytes to fill for a read, or the bytes
/// written.
enum BarAccess<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

/// Builds the device side of a queue from the registers the driver
/// programmed, checked against guest memory.
pub(super) fn build_queue(
    registers: &QueueRegisters,
    event_idx: bool,
    memory: &GuestMemoryMmap,
) -> Result<Queue, String> {
    if !registers.enabled {
        return Err("not enabled by the driver".to_string());
    }
    let mut queue = Queue::new(registers.max_size).map_err(|e| e.to_string())?;
    queue
        .try_set_size(registers.size)
        .map_err(|e| format!("size {}: {e}", registers.size))?;
    queue
        .try_set_desc_table_address(GuestAddress(registers.desc))
        .map_err(|e| e.to_string())?;
    queue
        .try_set_avail_ring_address(GuestAddress(registers.driver))
        .map_err(|e| e.to_string())?;
    queue
        .try_set_used_ring_address(GuestAddress(registers.device))
        .map_err(|e| e.to_string())?;
    queue.set_event_idx(event_idx);
    queue.set_ready(true);
    if !queue.is_valid(memory) {
        return Err("rings outside guest memory".to_string());
    }
    Ok(queue)
}

fn class_code(device_type: u32) -> u32 {
    match device_type {
        // Mass storage, SCSI/other; network, Ethernet.
        2 => 0x01_8000,
        1 => 0x02_0000,
        // Anything else: unclassified device.
        _ => 0xff_0000,
    }
}

// The body of a virtio_pci_cap after the capability ID and next pointer:
// cap_len, cfg_type, bar, id, padding, offset, length.
fn virtio_cap(cfg_type: u8, offset: u64, len: u64) -> Vec<u8> {
    let mut body = vec![16, cfg_type, 0, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(len as u32).to_le_bytes());
    body
}

fn add_pci_cfg_capability(config: &mut PciConfiguration) -> usize {
    let mut body = virtio_cap(VIRTIO_PCI_CAP_PCI_CFG, 0, 0);
    body[0] = 20;
    body.extend_from_slice(&[0; 4]);
    // The driver chooses bar, offset, length and data.
    let mut writable = vec![0u8; body.len()];
    writable[2] = 0xff;
    writable[6..18].fill(0xff);
    config.add_capability(PCI_CAP_ID_VENDOR, &body, &writable)
}

fn add_msix_capability(config: &mut PciConfiguration, vector_count: u16) -> usize {
    let mut body = Vec::new();
    body.extend_from_slice(&(vector_count - 1).to_le_bytes());
    // Table and PBA in BAR 0 (BIR 0 in the low three bits).
    body.extend_from_slice(&(MSIX_TABLE_OFFSET as u32).to_le_bytes());
    body.extend_from_slice(&(MSIX_PBA_OFFSET as u32).to_le_bytes());
    // Only the enable and function-mask bits are writable.
    config.add_capability(PCI_CAP_ID_MSIX, &body, &[0x00, 0xc0])
}

impl PciDevice for VirtioPciDevice {
    fn read_config(&mut self, offset: usize) -> u32 {
        let window = self.pci_cfg_capability + 16;
        if offset == window {
            self.read_pci_cfg_window();
        }
        self.config.read_register(offset)
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        let window = self.pci_cfg_capability + 16;
        if offset >= window && offset < window + 4 {
            self.write_pci_cfg_window(data);
            return;
        }
        let old_bar = self.config.bar_address(0);
        self.config.write(offset, data);
        let control = self.msix_capability + 2;
        if offset <= control + 1 && offset + data.len() > control {
            let value = u16::from_le_bytes([
                self.config.read_byte(control),
                self.config.read_byte(control + 1),
            ]);
            self.msix.set_control(value);
        }
        if self.config.bar_address(0) != old_bar && !self.ioeventfds.is_empty() {
            // The driver moved or disabled the BAR while running: the
            // notifications must follow or the device would go deaf.
            self.warnings.warn(
                &self.name,
                format_args!("BAR moved while the device runs; resetting it"),
            );
            self.reset();
            self.status = STATUS_DEVICE_NEEDS_RESET;
        }
    }

    fn bar_containing(&self, address: u64) -> Option<(usize, u64)> {
        crate::pci::find_bar(&self.config, address)
    }

    fn read_bar(&mut self, _bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if !matches!(data.len(), 1 | 2 | 4 | 8) {
            return;
        }
        self.access_bar(offset, BarAccess::Read(data));
    }

    fn write_bar(&mut self, _bar: usize, offset: u64, data: &[u8]) {
        if !matches!(data.len(), 1 | 2 | 4 | 8) {
            return;
        }
        self.access_bar(offset, BarAccess::Write(data));
    }
}

//! A split virtqueue driver that runs on the host: it lays out the
//! descriptor table and rings in real guest memory and offers and collects
//! buffers the way a guest driver does (virtio 1.2 §2.7). Device tests and
//! benchmarks use it to drive a device without a guest.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering, fence};
use std::time::{Duration, Instant};

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use vmm_sys_util::eventfd::EventFd;

use super::pci::{QueueRegisters, build_queue};
use super::{ActivateContext, ActivateError, ActiveQueue, QueueInterrupt, VirtioDevice};
use crate::memory::GuestMemoryMmap;

const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;
const DESCRIPTOR_BYTES: u64 = 16;

/// One buffer of a request: guest address, length, and whether the device
/// writes it.
#[derive(Clone, Copy, Debug)]
pub struct Buffer {
    /// Guest physical address.
    pub address: u64,
    /// Length in bytes.
    pub len: u32,
    /// True for buffers the device writes (VIRTQ_DESC_F_WRITE).
    pub device_writable: bool,
}

/// The driver side of one split virtqueue.
pub struct QueueDriver {
    size: u16,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
    free: Vec<u16>,
    in_flight: HashMap<u16, Vec<u16>>,
    next_avail: u16,
    next_used: u16,
}

/// Bytes of guest memory a queue of `size` entries occupies from its base.
pub fn queue_footprint(size: u16) -> u64 {
    let size = u64::from(size);
    let avail_end = size * DESCRIPTOR_BYTES + 6 + 2 * size;
    avail_end.next_multiple_of(4096) + 6 + 8 * size
}

impl QueueDriver {
    /// Lays out a queue of `size` entries (a power of two) at `base`,
    /// which must have [`queue_footprint`] bytes of guest memory.
    pub fn new(memory: &GuestMemoryMmap, base: u64, size: u16) -> QueueDriver {
        let desc_table = base;
        let avail_ring = base + u64::from(size) * DESCRIPTOR_BYTES;
        let used_ring = (avail_ring + 6 + 2 * u64::from(size)).next_multiple_of(4096);
        let zeroes = vec![0u8; queue_footprint(size) as usize];
        memory
            .write_slice(&zeroes, GuestAddress(base))
            .expect("the caller placed the queue in guest memory");
        QueueDriver {
            size,
            desc_table,
            avail_ring,
            used_ring,
            free: (0..size).rev().collect(),
            in_flight: HashMap::new(),
            next_avail: 0,
            next_used: 0,
        }
    }

    /// Lays out a queue of `size` entries at `base` and activates the
    /// one-queue `device` on it, as a driver's DRIVER_OK would. Returns the
    /// driver and the eventfd that notifies the device (the descriptor KVM's
    /// ioeventfd signals). The device gets no interrupt vector: completions
    /// are seen by reading the used ring.
    pub fn activate(
        device: &mut dyn VirtioDevice,
        memory: &Arc<GuestMemoryMmap>,
        base: u64,
        size: u16,
    ) -> Result<(QueueDriver, EventFd), ActivateError> {
        let driver = QueueDriver::new(memory, base, size);
        let notify = EventFd::new(libc::EFD_NONBLOCK).map_err(ActivateError::SpawnWorker)?;
        let device_notify = notify.try_clone().map_err(ActivateError::SpawnWorker)?;
        device.activate(ActivateContext {
            memory: memory.clone(),
            acked_features: 0,
            queues: vec![ActiveQueue {
                queue: driver.device_queue(memory),
                notify: device_notify,
                interrupt: QueueInterrupt::new(None, Arc::new(AtomicU8::new(0))),
            }],
        })?;
        Ok((driver, notify))
    }

    /// Returns the device side of this queue, configured and ready, as
    /// the PCI transport builds it for a driver without EVENT_IDX.
    pub fn device_queue(&self, memory: &GuestMemoryMmap) -> Queue {
        let registers = QueueRegisters {
            enabled: true,
            desc: self.desc_table,
            driver: self.avail_ring,
            device: self.used_ring,
            ..QueueRegisters::new(self.size)
        };
        build_queue(&registers, false, memory)
            .expect("the size is a power of two and the queue is in guest memory")
    }

    /// Returns the number of free descriptors.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Offers one request made of `buffers`; returns its head index, or
    /// None when too few descriptors are free.
    pub fn add_request(&mut self, memory: &GuestMemoryMmap, buffers: &[Buffer]) -> Option<u16> {
        if buffers.is_empty() || buffers.len() > self.free.len() {
            return None;
        }
        let indices: Vec<u16> = (0..buffers.len())
            .map(|_| self.free.pop().expect("checked"))
            .collect();
        for (position, buffer) in buffers.iter().enumerate() {
            let mut flags = 0;
            if buffer.device_writable {
                flags |= VIRTQ_DESC_F_WRITE;
            }
            let next = indices.get(position + 1).copied();
            if next.is_some() {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            self.write_descriptor(
                memory,
                indices[position],
                buffer.address,
                buffer.len,
                flags,
                next.unwrap_or(0),
            );
        }
        let head = indices[0];
        self.in_flight.insert(head, indices);
        self.publish(memory, head);
        Some(head)
    }

    /// Writes descriptor `index` as given, for tests that build malformed
    /// chains. The descriptor is not tracked as in flight.
    pub fn write_descriptor(
        &self,
        memory: &GuestMemoryMmap,
        index: u16,
        address: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = self.desc_table + u64::from(index) * DESCRIPTOR_BYTES;
        let mut bytes = [0u8; 16];
        bytes[0..8].copy_from_slice(&address.to_le_bytes());
        bytes[8..12].copy_from_slice(&len.to_le_bytes());
        bytes[12..14].copy_from_slice(&flags.to_le_bytes());
        bytes[14..16].copy_from_slice(&next.to_le_bytes());
        memory
            .write_slice(&bytes, GuestAddress(at))
            .expect("the descriptor table is in guest memory");
    }

    /// Puts `head` in the available ring and publishes it, without any
    /// bookkeeping: for tests that offer raw or invalid heads.
    pub fn publish(&mut self, memory: &GuestMemoryMmap, head: u16) {
        let slot = self.avail_ring + 4 + 2 * u64::from(self.next_avail % self.size);
        memory
            .write_obj(head, GuestAddress(slot))
            .expect("the available ring is in guest memory");
        self.next_avail = self.next_avail.wrapping_add(1);
        // The ring entry must be visible before the index that covers it
        // (virtio 1.2 §2.7.13.2).
        fence(Ordering::Release);
        memory
            .write_obj(self.next_avail, GuestAddress(self.avail_ring + 2))
            .expect("the available ring is in guest memory");
    }

    /// Returns whether the device wants to be notified of new requests: it
    /// sets VIRTQ_USED_F_NO_NOTIFY while it is already processing the
    /// ring (virtio 1.2 §2.7.7).
    pub fn needs_kick(&self, memory: &GuestMemoryMmap) -> bool {
        const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;
        // The requests must be visible before the flag is read.
        fence(Ordering::SeqCst);
        let flags: u16 = memory
            .read_obj(GuestAddress(self.used_ring))
            .expect("the used ring is in guest memory");
        flags & VIRTQ_USED_F_NO_NOTIFY == 0
    }

    /// Takes the next used entry, if the device has returned one: the head
    /// index and the number of bytes the device wrote.
    pub fn pop_used(&mut self, memory: &GuestMemoryMmap) -> Option<(u16, u32)> {
        let used_index: u16 = memory
            .read_obj(GuestAddress(self.used_ring + 2))
            .expect("the used ring is in guest memory");
        if used_index == self.next_used {
            return None;
        }
        fence(Ordering::Acquire);
        let slot = self.used_ring + 4 + 8 * u64::from(self.next_used % self.size);
        let id: u32 = memory
            .read_obj(GuestAddress(slot))
            .expect("in guest memory");
        let len: u32 = memory
            .read_obj(GuestAddress(slot + 4))
            .expect("in guest memory");
        self.next_used = self.next_used.wrapping_add(1);
        if let Some(indices) = self.in_flight.remove(&(id as u16)) {
            self.free.extend(indices);
        }
        Some((id as u16, len))
    }

    /// Waits up to `timeout` for the next used entry, checking every
    /// millisecond; returns None if none came.
    pub fn wait_used(&mut self, memory: &GuestMemoryMmap, timeout: Duration) -> Option<(u16, u32)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(used) = self.pop_used(memory) {
                return Some(used);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

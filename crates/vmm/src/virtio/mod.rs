//! Virtio devices (virtio 1.2) and the pieces every device shares: the
//! device trait the PCI transport drives, queue interrupts, and the worker
//! thread that waits for queue notifications.

pub mod block;
pub mod driver;
pub mod pci;
pub mod rng;

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

use crate::irq::MsiVector;
use crate::memory::GuestMemoryMmap;

/// Device type of the block device (virtio 1.2 §5).
pub const VIRTIO_ID_BLOCK: u32 = 2;
/// Device type of the entropy device (virtio 1.2 §5).
pub const VIRTIO_ID_RNG: u32 = 4;
/// Feature bit: the device complies with virtio 1.x (virtio 1.2 §6).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Feature bit: the driver may use indirect descriptors.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// Feature bit: used and available event index fields.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// ISR bit: a queue has used buffers.
const ISR_QUEUE: u8 = 1;

/// Raises a queue's interrupt: the ISR bit for drivers polling ISR, and
/// the queue's MSI-X vector when one is assigned.
#[derive(Clone)]
pub struct QueueInterrupt {
    vector: Option<Arc<MsiVector>>,
    isr: Arc<AtomicU8>,
}

impl QueueInterrupt {
    /// Creates the interrupt for a queue using `vector`, or none when the
    /// driver assigned VIRTIO_MSI_NO_VECTOR.
    pub fn new(vector: Option<Arc<MsiVector>>, isr: Arc<AtomicU8>) -> QueueInterrupt {
        QueueInterrupt { vector, isr }
    }

    /// Tells the driver the queue has new used buffers.
    pub fn trigger(&self) {
        self.isr.fetch_or(ISR_QUEUE, Ordering::AcqRel);
        if let Some(vector) = &self.vector {
            vector.trigger();
        }
    }
}

/// A queue handed to a device when the driver sets DRIVER_OK.
pub struct ActiveQueue {
    /// The queue, configured and validated against guest memory.
    pub queue: Queue,
    /// Signalled (by KVM's ioeventfd) when the driver notifies the queue.
    pub notify: EventFd,
    /// Raises the queue's interrupt.
    pub interrupt: QueueInterrupt,
}

impl ActiveQueue {
    /// Serves every request the driver has made available: `handle` gets
    /// each descriptor chain and returns how many bytes it wrote into the
    /// chain's buffers, and the chain goes back to the driver. The driver
    /// is interrupted once at the end, if it asked to be.
    ///
    /// An error means the available ring itself is broken (an index the
    /// queue size cannot explain); the caller decides what to log.
    pub fn serve(
        &mut self,
        memory: &GuestMemoryMmap,
        mut handle: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
    ) -> Result<(), virtio_queue::Error> {
        let mut used_any = false;
        let result = 'serve: loop {
            if let Err(e) = self.queue.disable_notification(memory) {
                break Err(e);
            }
            // Take one chain per iterator, because the iterator borrows the
            // queue that add_used needs. A chain does not borrow it.
            loop {
                let chain = match self.queue.iter(memory) {
                    Ok(mut iter) => iter.next(),
                    Err(e) => break 'serve Err(e),
                };
                let Some(chain) = chain else {
                    break;
                };
                let head = chain.head_index();
                let written = handle(chain);
                used_any |= self.queue.add_used(memory, head, written).is_ok();
            }
            // Requests that arrived while notifications were off are
            // served before sleeping (virtio 1.2 §2.7.10).
            match self.queue.enable_notification(memory) {
                Ok(true) => continue,
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if used_any && self.queue.needs_notification(memory).unwrap_or(true) {
            self.interrupt.trigger();
        }
        result
    }
}

/// The guest memory, features and queues a device starts serving with.
pub struct ActivateContext {
    /// Guest memory.
    pub memory: Arc<GuestMemoryMmap>,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// One entry per queue, in queue index order.
    pub queues: Vec<ActiveQueue>,
}

/// Errors activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver enabled a different number of queues than the device has.
    #[error("expected {expected} queues, the driver set up {actual}")]
    QueueCount {
        /// Queues the device needs.
        expected: usize,
        /// Queues the driver set up.
        actual: usize,
    },
    /// Starting the worker thread failed.
    #[error("cannot start the device thread")]
    SpawnWorker(#[source] std::io::Error),
}

/// Takes the queue of a one-queue device out of the queues the driver set
/// up. Any other number of queues is a QueueCount error.
pub(crate) fn single_queue(queues: Vec<ActiveQueue>) -> Result<ActiveQueue, ActivateError> {
    let [queue] =
        <[ActiveQueue; 1]>::try_from(queues).map_err(|queues| ActivateError::QueueCount {
            expected: 1,
            actual: queues.len(),
        })?;
    Ok(queue)
}

/// A virtio device model driven by a transport.
pub trait VirtioDevice: Send {
    /// Returns the virtio device type (virtio 1.2 §5).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Device-specific feature bits; the transport adds the generic ones.
    fn device_features(&self) -> u64;
    /// Reads device configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device configuration space at `offset`.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts serving `context.queues`.
    fn activate(&mut self, context: ActivateContext) -> Result<(), ActivateError>;
    /// Stops serving the queues and returns to the initial state.
    fn reset(&mut self);
}

/// A worker thread serving a device's queues, stopped on drop.
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

/// A device's queue handling, run on a [`Worker`] thread.
pub trait QueueHandler: Send + 'static {
    /// Processes queue `index` after the driver notified it.
    fn process_queue(&mut self, index: usize);
    /// Returns the notification eventfd of each queue, in index order.
    /// [`Worker::spawn`] calls it once, before the thread starts.
    fn notify_fds(&self) -> Vec<&EventFd>;
}

impl Worker {
    /// Starts a thread named `name` that calls `handler` for each notified
    /// queue until the worker is dropped.
    pub fn spawn<H: QueueHandler>(name: &str, mut handler: H) -> std::io::Result<Worker> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let thread_stop = stop.try_clone()?;
        // The thread polls duplicates of the notification eventfds, so that
        // its poll set does not borrow the handler it calls.
        let notify = handler
            .notify_fds()
            .into_iter()
            .map(EventFd::try_clone)
            .collect::<std::io::Result<Vec<_>>>()?;
        let thread = std::thread::Builder::new()
            .stack_size(crate::HELPER_STACK_BYTES)
            .name(name.to_string())
            .spawn(move || worker_loop(&mut handler, &notify, &thread_stop))?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// Polls the `notify` eventfds (queue `i` at index `i`) and `stop`, and
// calls `handler` for each notified queue until `stop` is signalled.
fn worker_loop<H: QueueHandler>(handler: &mut H, notify: &[EventFd], stop: &EventFd) {
    let mut fds: Vec<PollFd> = notify
        .iter()
        .chain([stop])
        .map(|fd| PollFd::new(borrow_eventfd(fd), PollFlags::POLLIN))
        .collect();
    let is_ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                log::error!("virtio worker: poll failed: {e}");
                return;
            }
        }
        if is_ready(&fds[notify.len()]) {
            return;
        }
        for (index, eventfd) in notify.iter().enumerate() {
            if !is_ready(&fds[index]) {
                continue;
            }
            // Reading resets the eventfd counter; a notification arriving
            // after the read is seen on the next poll.
            let _ = eventfd.read();
            handler.process_queue(index);
        }
    }
}

/// Borrows an eventfd's descriptor for poll(2).
pub fn borrow_eventfd(eventfd: &EventFd) -> BorrowedFd<'_> {
    // SAFETY: the descriptor is open for as long as `eventfd` lives, and
    // the returned borrow cannot outlive `eventfd`.
    unsafe { BorrowedFd::borrow_raw(eventfd.as_raw_fd()) }
}

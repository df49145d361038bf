//! The entropy device (virtio 1.2 §5.4): fills every device-writable buffer
//! the driver offers with random bytes from the host's getrandom(2).

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{
    ActivateContext, ActivateError, ActiveQueue, QueueHandler, VIRTIO_ID_RNG, VirtioDevice, Worker,
    single_queue,
};
use crate::memory::GuestMemoryMmap;
use crate::warnings::WarningBudget;

const QUEUE_SIZE: u16 = 256;
/// Bytes served per request at most, so one request cannot keep the
/// worker busy for long. A driver that wants more sends another request.
const MAX_BYTES_PER_REQUEST: u32 = 64 * 1024;

/// The virtio-rng device.
pub struct Rng {
    worker: Option<Worker>,
}

impl Rng {
    /// Creates the device.
    pub fn new() -> Rng {
        Rng { worker: None }
    }
}

impl Default for Rng {
    fn default() -> Rng {
        Rng::new()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // The entropy device has no configuration space.
        data.fill(0);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, context: ActivateContext) -> Result<(), ActivateError> {
        let queue = single_queue(context.queues)?;
        let handler = RngHandler {
            memory: context.memory,
            queue,
            warnings: WarningBudget::default(),
        };
        self.worker = Some(Worker::spawn("viornd", handler).map_err(ActivateError::SpawnWorker)?);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
    }
}

struct RngHandler {
    memory: Arc<GuestMemoryMmap>,
    queue: ActiveQueue,
    warnings: WarningBudget,
}

impl RngHandler {
    // Fills the writable descriptors of one chain; returns the bytes
    // written, or an error description for a buffer outside guest memory.
    fn fill_chain(
        memory: &GuestMemoryMmap,
        chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
    ) -> (u32, Option<String>) {
        let mut written = 0u32;
        let mut buffer = [0u8; 4096];
        for descriptor in chain.writable() {
            let mut remaining = descriptor.len().min(MAX_BYTES_PER_REQUEST - written);
            let mut address = descriptor.addr();
            while remaining > 0 {
                let count = remaining.min(buffer.len() as u32) as usize;
                fill_random(&mut buffer[..count]);
                if let Err(e) = memory.write_slice(&buffer[..count], address) {
                    return (written, Some(format!("buffer at 0x{:x}: {e}", address.0)));
                }
                written += count as u32;
                remaining -= count as u32;
                address = GuestAddress(address.0.wrapping_add(count as u64));
            }
            if written >= MAX_BYTES_PER_REQUEST {
                break;
            }
        }
        (written, None)
    }
}

impl QueueHandler for RngHandler {
    fn process_queue(&mut self, _index: usize) {
        let memory = self.memory.clone();
        let warnings = &mut self.warnings;
        let result = self.queue.serve(&memory, |chain| {
            let head = chain.head_index();
            let (written, error) = RngHandler::fill_chain(&memory, chain);
            if let Some(error) = error {
                warnings.warn("viornd", format_args!("request {head}: {error}"));
            }
            written
        });
        if let Err(e) = result {
            self.warnings
                .warn("viornd", format_args!("bad available ring: {e}"));
        }
    }

    fn notify_fds(&self) -> Vec<&EventFd> {
        vec![&self.queue.notify]
    }
}

fn fill_random(buffer: &mut [u8]) {
    let mut filled = 0;
    while filled < buffer.len() {
        let rest = &mut buffer[filled..];
        // SAFETY: `rest` is a valid, writable buffer of `rest.len()` bytes
        // that outlives the call; getrandom writes at most that many.
        let count = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if count > 0 {
            filled += count as usize;
        }
        // getrandom only fails with EINTR here (the flags are valid and the
        // buffer is writable), so retrying is correct.
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vm_memory::GuestAddress;

    use super::*;
    use crate::virtio::driver::{Buffer, QueueDriver};

    struct Harness {
        memory: Arc<GuestMemoryMmap>,
        driver: QueueDriver,
        notify: EventFd,
        device: Rng,
    }

    fn harness() -> Harness {
        let memory = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
        let mut device = Rng::new();
        let (driver, notify) = QueueDriver::activate(&mut device, &memory, 0x1000, 16).unwrap();
        Harness {
            memory,
            driver,
            notify,
            device,
        }
    }

    // Offers `buffer` as a one-buffer request; returns the used length the
    // device reported.
    fn submit(harness: &mut Harness, buffer: Buffer) -> u32 {
        let head = harness
            .driver
            .add_request(&harness.memory, &[buffer])
            .unwrap();
        harness.notify.write(1).unwrap();
        let (used_head, len) = harness
            .driver
            .wait_used(&harness.memory, Duration::from_secs(5))
            .expect("the device did not complete the request");
        assert_eq!(used_head, head);
        len
    }

    #[test]
    fn request_gets_requested_number_of_bytes() {
        let mut harness = harness();
        let buffer = Buffer {
            address: 0x10000,
            len: 4000,
            device_writable: true,
        };
        assert_eq!(submit(&mut harness, buffer), 4000);
        let mut bytes = vec![0u8; 4000];
        harness
            .memory
            .read_slice(&mut bytes, GuestAddress(0x10000))
            .unwrap();
        assert!(bytes.iter().any(|&b| b != 0));
        harness.device.reset();
    }

    #[test]
    fn large_request_is_capped() {
        let mut harness = harness();
        let buffer = Buffer {
            address: 0x20000,
            len: 128 * 1024,
            device_writable: true,
        };
        assert_eq!(submit(&mut harness, buffer), MAX_BYTES_PER_REQUEST);
    }

    #[test]
    fn device_readable_buffer_gets_nothing() {
        let mut harness = harness();
        let buffer = Buffer {
            address: 0x10000,
            len: 64,
            device_writable: false,
        };
        assert_eq!(submit(&mut harness, buffer), 0);
    }
}

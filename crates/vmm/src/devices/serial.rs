//! The COM1 8250 UART (port 0x3f8, IRQ 4) on top of vm-superio's model,
//! with the guest's console connected to a host file (normally a pty
//! master) in both directions.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{BusDevice, lock_device};
use crate::virtio::borrow_eventfd;

/// First port of COM1.
pub const COM1_PORT_BASE: u16 = 0x3f8;
/// Number of ports of an 8250.
pub const COM1_PORT_COUNT: u16 = 8;
/// The ISA interrupt of COM1.
pub const COM1_IRQ: u32 = 4;

/// Raises the UART interrupt by writing to an eventfd registered with KVM
/// as an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where the guest's console output goes.
pub enum ConsoleOutput {
    /// A non-blocking file, normally a pty master. Output that does not fit
    /// (nobody is reading the other side) is dropped rather than stalling
    /// the vCPU.
    File(File),
    /// An in-memory buffer, for tests.
    Buffer(Arc<Mutex<Vec<u8>>>),
    /// Discard all output.
    Discard,
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ConsoleOutput::File(file) => match file.write(buf) {
                Ok(written) => Ok(written),
                // EAGAIN: the pty buffer is full; EIO: no slave is open.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(buf.len()),
                Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(buf.len()),
                Err(e) => Err(e),
            },
            ConsoleOutput::Buffer(buffer) => {
                lock_device(buffer).extend_from_slice(buf);
                Ok(buf.len())
            }
            ConsoleOutput::Discard => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The UART as a bus device.
pub struct SerialDevice {
    serial: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleOutput>,
    output_error_logged: bool,
}

impl SerialDevice {
    /// Creates a UART that signals `irq` and writes output to `output`.
    pub fn new(irq: EventFd, output: ConsoleOutput) -> SerialDevice {
        SerialDevice {
            serial: Serial::new(IrqTrigger(irq), output),
            output_error_logged: false,
        }
    }

    /// Queues host input for the guest; returns how many bytes fit.
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        if self.serial.fifo_capacity() == 0 {
            return 0;
        }
        self.serial.enqueue_raw_bytes(input).unwrap_or(0)
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() == 1 {
            data[0] = self.serial.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 {
            return;
        }
        if let Err(e) = self.serial.write(offset as u8, data[0])
            && !self.output_error_logged
        {
            self.output_error_logged = true;
            log::warn!("serial: console output failed: {e:?}");
        }
    }
}

/// Copies host input from `input` into the UART until `stop` is signalled.
///
/// Input is taken only as fast as the guest drains the UART's FIFO, so
/// nothing typed is lost.
pub fn spawn_input_thread(
    serial: Arc<Mutex<SerialDevice>>,
    mut input: File,
    stop: EventFd,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .stack_size(crate::HELPER_STACK_BYTES)
        .name("serial-input".into())
        .spawn(move || {
            let mut buffer = [0u8; 64];
            loop {
                let mut fds = [
                    PollFd::new(input.as_fd(), PollFlags::POLLIN),
                    PollFd::new(borrow_eventfd(&stop), PollFlags::POLLIN),
                ];
                if poll(&mut fds, PollTimeout::NONE).is_err() {
                    continue;
                }
                let stop_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
                let input_events = fds[0].revents().unwrap_or(PollFlags::empty());
                if stop_ready {
                    return;
                }
                if input_events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)
                    && !input_events.contains(PollFlags::POLLIN)
                {
                    // No slave is open on the pty; wait for one.
                    if wait_for_stop(&stop, Duration::from_millis(200)) {
                        return;
                    }
                    continue;
                }
                let count = match input.read(&mut buffer) {
                    Ok(0) => continue,
                    Ok(count) => count,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(_) => {
                        if wait_for_stop(&stop, Duration::from_millis(200)) {
                            return;
                        }
                        continue;
                    }
                };
                if deliver_input(&serial, &buffer[..count], &stop) {
                    return;
                }
            }
        })
}

// Returns true when `stop` was signalled while waiting for FIFO space.
fn deliver_input(serial: &Mutex<SerialDevice>, mut pending: &[u8], stop: &EventFd) -> bool {
    while !pending.is_empty() {
        let taken = lock_device(serial).enqueue_input(pending);
        pending = &pending[taken..];
        if !pending.is_empty() && wait_for_stop(stop, Duration::from_millis(5)) {
            return true;
        }
    }
    false
}

fn wait_for_stop(stop: &EventFd, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(borrow_eventfd(stop), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    matches!(poll(&mut fds, timeout), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial_with_buffer() -> (SerialDevice, Arc<Mutex<Vec<u8>>>) {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        (
            SerialDevice::new(irq, ConsoleOutput::Buffer(buffer.clone())),
            buffer,
        )
    }

    #[test]
    fn data_register_write_reaches_output() {
        let (mut serial, buffer) = serial_with_buffer();
        serial.write(0, b"h");
        serial.write(0, b"i");
        assert_eq!(*buffer.lock().unwrap(), b"hi");
    }

    #[test]
    fn enqueued_input_is_read_from_data_register() {
        let (mut serial, _) = serial_with_buffer();
        assert_eq!(serial.enqueue_input(b"x"), 1);
        let mut data = [0u8; 1];
        serial.read(0, &mut data);
        assert_eq!(data, *b"x");
    }
}

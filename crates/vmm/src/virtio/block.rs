//! The block device (virtio 1.2 §5.2): read, write, flush, get ID,
//! discard and write zeroes on a [`disk::Disk`], from one worker thread
//! per device woken by the queue's ioeventfd.
//!
//! Requests come from the guest and are hostile. Every descriptor address
//! and length is checked against guest memory and every sector range
//! against the disk. A malformed request gets an error status, and the
//! device keeps serving the rest of the queue.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use disk::Disk;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::EventFd;

use super::{
    ActivateContext, ActivateError, ActiveQueue, QueueHandler, VIRTIO_ID_BLOCK, VirtioDevice,
    Worker, single_queue,
};
use crate::memory::GuestMemoryMmap;
use crate::warnings::WarningBudget;

/// Entries of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Data descriptors per request (the header and status take two more).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Bytes per sector, the unit of request offsets.
pub const SECTOR_BYTES: u64 = 512;
/// Bytes of a serial number returned by GET_ID.
const ID_BYTES: usize = 20;
/// Sectors one discard or write-zeroes segment may cover (4 GiB - 1
/// sector: the field is 32 bits).
const MAX_DISCARD_SECTORS: u32 = u32::MAX;

const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
const VIRTIO_BLK_F_DISCARD: u64 = 1 << 13;
const VIRTIO_BLK_F_WRITE_ZEROES: u64 = 1 << 14;

const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_T_FLUSH: u32 = 4;
const VIRTIO_BLK_T_GET_ID: u32 = 8;
const VIRTIO_BLK_T_DISCARD: u32 = 11;
const VIRTIO_BLK_T_WRITE_ZEROES: u32 = 13;

const VIRTIO_BLK_S_OK: u8 = 0;
const VIRTIO_BLK_S_IOERR: u8 = 1;
const VIRTIO_BLK_S_UNSUPP: u8 = 2;

const REQUEST_HEADER_BYTES: usize = 16;
const DISCARD_SEGMENT_BYTES: usize = 16;
const WRITE_ZEROES_FLAG_UNMAP: u32 = 1;
const CONFIG_BYTES: usize = 60;

/// A virtio-blk device over one disk.
pub struct Block {
    name: String,
    disk: Arc<Disk>,
    id: [u8; ID_BYTES],
    config: [u8; CONFIG_BYTES],
    worker: Option<Worker>,
}

impl Block {
    /// Creates the device `name` (for logs, e.g. `vioblk0`) serving `disk`;
    /// `serial` (up to 20 bytes) is what GET_ID returns.
    pub fn new(name: String, disk: Arc<Disk>, serial: &str) -> Block {
        let mut id = [0u8; ID_BYTES];
        let serial = serial.as_bytes();
        let len = serial.len().min(ID_BYTES);
        id[..len].copy_from_slice(&serial[..len]);
        let config = config_space(disk.size());
        Block {
            name,
            disk,
            id,
            config,
            worker: None,
        }
    }
}

// struct virtio_blk_config (virtio 1.2 §5.2.4), little endian.
fn config_space(size_bytes: u64) -> [u8; CONFIG_BYTES] {
    let mut config = [0u8; CONFIG_BYTES];
    let mut put = |offset: usize, bytes: &[u8]| {
        config[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    put(0, &(size_bytes / SECTOR_BYTES).to_le_bytes());
    put(12, &SEG_MAX.to_le_bytes());
    put(20, &(SECTOR_BYTES as u32).to_le_bytes());
    put(34, &1u16.to_le_bytes());
    put(36, &MAX_DISCARD_SECTORS.to_le_bytes());
    put(40, &1u32.to_le_bytes());
    put(44, &1u32.to_le_bytes());
    put(48, &MAX_DISCARD_SECTORS.to_le_bytes());
    put(52, &1u32.to_le_bytes());
    put(56, &[1]);
    config
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        let mut features = VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH;
        if self.disk.is_read_only() {
            features |= VIRTIO_BLK_F_RO;
        } else {
            features |= VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES;
        }
        features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self.config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The writeback field is only writable with VIRTIO_BLK_F_CONFIG_WCE,
        // which is not offered: the cache mode is always writeback, with
        // FLUSH honoured.
    }

    fn activate(&mut self, context: ActivateContext) -> Result<(), ActivateError> {
        let queue = single_queue(context.queues)?;
        let handler = BlockHandler {
            queue,
            requests: RequestServer {
                name: self.name.clone(),
                memory: context.memory,
                disk: self.disk.clone(),
                id: self.id,
                warnings: WarningBudget::default(),
                segments: Vec::with_capacity(8),
            },
        };
        self.worker = Some(Worker::spawn(&self.name, handler).map_err(ActivateError::SpawnWorker)?);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
    }
}

struct BlockHandler {
    queue: ActiveQueue,
    requests: RequestServer,
}

/// Executes requests; kept apart from the queue so that both can be
/// borrowed at once while the queue hands out chains.
struct RequestServer {
    name: String,
    memory: Arc<GuestMemoryMmap>,
    disk: Arc<Disk>,
    id: [u8; ID_BYTES],
    warnings: WarningBudget,
    // Reused for every request, so that serving one allocates nothing.
    segments: Vec<Segment>,
}

/// One descriptor of a request, checked against guest memory.
#[derive(Clone, Copy)]
struct Segment {
    address: u64,
    len: u32,
    writable: bool,
}

impl Segment {
    fn outside_memory(&self) -> RequestError {
        RequestError::BadAddress {
            address: self.address,
            len: self.len,
        }
    }
}

/// The reason a request failed, which decides the status returned to the
/// guest.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("buffer 0x{address:x}+{len} is outside guest memory")]
    BadAddress { address: u64, len: u32 },
    #[error("sectors {sector}+{count} are beyond the disk end")]
    OutOfRange { sector: u64, count: u64 },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("{0}")]
    Disk(#[from] disk::Error),
    #[error("disk I/O at byte 0x{offset:x}")]
    RawIo {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
}

/// Moves all bytes described by `iovecs` between `file` at `offset` and
/// guest memory, calling preadv/pwritev until nothing is left.
///
/// Every iovec must point into guest memory that stays mapped for the
/// call (the caller holds the slices' pointer guards).
fn transfer_iovecs(
    file: &std::fs::File,
    iovecs: &mut [libc::iovec],
    offset: u64,
    direction: Direction,
) -> Result<(), RequestError> {
    let total: usize = iovecs.iter().map(|iov| iov.iov_len).sum();
    let mut done = 0usize;
    let mut first = 0usize;
    while done < total {
        let position = offset + done as u64;
        let count = (iovecs.len() - first) as libc::c_int;
        let fd = file.as_raw_fd();
        // SAFETY: each iovec from `first` on points into guest memory that
        // the caller keeps mapped, with a length get_slice checked, so the
        // kernel touches only those ranges. `first` < iovecs.len() while
        // bytes remain. With one buffer left, pread/pwrite do the same
        // without copying an iovec array into the kernel.
        let result = unsafe {
            let base = iovecs.as_ptr().add(first);
            match (direction, count) {
                (Direction::Read, 1) => {
                    libc::pread(fd, (*base).iov_base, (*base).iov_len, position as i64)
                }
                (Direction::Write, 1) => {
                    libc::pwrite(fd, (*base).iov_base, (*base).iov_len, position as i64)
                }
                (Direction::Read, _) => libc::preadv(fd, base, count, position as i64),
                (Direction::Write, _) => libc::pwritev(fd, base, count, position as i64),
            }
        };
        if result < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RequestError::RawIo {
                offset: position,
                source: error,
            });
        }
        if result == 0 {
            return Err(RequestError::RawIo {
                offset: position,
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        // Skip what was transferred: whole iovecs, then part of one.
        let mut advanced = result as usize;
        done += advanced;
        while first < iovecs.len() && advanced >= iovecs[first].iov_len {
            advanced -= iovecs[first].iov_len;
            first += 1;
        }
        if advanced > 0 {
            let iov = &mut iovecs[first];
            // SAFETY: `advanced` < iov_len, so the new base stays inside the
            // same guest memory range.
            iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(advanced).cast() };
            iov.iov_len -= advanced;
        }
    }
    Ok(())
}

/// Which way data moves between a raw disk and guest memory.
#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

impl RequestError {
    // The only place errors become guest-visible statuses.
    fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => VIRTIO_BLK_S_UNSUPP,
            _ => VIRTIO_BLK_S_IOERR,
        }
    }

    // Errors the guest can cause by itself are logged (rate-limited);
    // disk errors are the host's problem and always worth a line.
    fn is_guest_caused(&self) -> bool {
        !matches!(self, RequestError::Disk(_) | RequestError::RawIo { .. })
    }
}

/// A parsed request: type, first sector, and where its status byte lives.
/// Its data buffers stay in the reused segment vector.
struct Request {
    kind: u32,
    sector: u64,
    status: u64,
}

impl RequestServer {
    // Lists the chain's non-empty descriptors into `segments`. Addresses
    // are checked where they are used, by the guest memory accessors.
    fn collect_segments(
        chain: DescriptorChain<&GuestMemoryMmap>,
        segments: &mut Vec<Segment>,
    ) -> Result<(), RequestError> {
        // The chain iterator stops after queue-size descriptors, so a
        // looping chain ends here too.
        for descriptor in chain {
            if segments.len() > SEG_MAX as usize + 2 {
                return Err(RequestError::Malformed("too many descriptors"));
            }
            if descriptor.len() > 0 {
                segments.push(Segment {
                    address: descriptor.addr().0,
                    len: descriptor.len(),
                    writable: descriptor.is_write_only(),
                });
            }
        }
        Ok(())
    }

    // Splits a chain into header, data and status. The layout is free
    // (virtio 1.2 §2.7.4): the header is the first 16 device-readable
    // bytes and the status the last device-writable byte, wherever the
    // descriptor boundaries fall. Both are trimmed off `segments`, which
    // keeps only the non-empty data segments.
    fn parse(&self, segments: &mut Vec<Segment>) -> Result<Request, RequestError> {
        let readable_bytes: u64 = segments
            .iter()
            .filter(|s| !s.writable)
            .map(|s| u64::from(s.len))
            .sum();
        if readable_bytes < REQUEST_HEADER_BYTES as u64 {
            return Err(RequestError::Malformed("no request header"));
        }
        let last = segments
            .last_mut()
            .filter(|s| s.writable)
            .ok_or(RequestError::Malformed("no status byte"))?;
        let status = last.address + u64::from(last.len) - 1;
        last.len -= 1;

        let mut header = [0u8; REQUEST_HEADER_BYTES];
        let mut header_filled = 0usize;
        for segment in segments.iter_mut() {
            if header_filled == REQUEST_HEADER_BYTES {
                break;
            }
            if segment.writable {
                continue;
            }
            let take = (REQUEST_HEADER_BYTES - header_filled).min(segment.len as usize);
            self.memory
                .read_slice(
                    &mut header[header_filled..header_filled + take],
                    GuestAddress(segment.address),
                )
                .map_err(|_| segment.outside_memory())?;
            header_filled += take;
            segment.address += take as u64;
            segment.len -= take as u32;
        }
        segments.retain(|segment| segment.len > 0);
        Ok(Request {
            kind: u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")),
            sector: u64::from_le_bytes(header[8..16].try_into().expect("8 bytes")),
            status,
        })
    }

    fn check_range(&self, sector: u64, bytes: u64) -> Result<u64, RequestError> {
        let count = bytes / SECTOR_BYTES;
        let offset = sector.checked_mul(SECTOR_BYTES);
        match offset.and_then(|o| o.checked_add(bytes)) {
            Some(end) if end <= self.disk.size() => Ok(offset.expect("checked above")),
            _ => Err(RequestError::OutOfRange { sector, count }),
        }
    }

    // Executes a request; returns the bytes written into guest buffers,
    // not counting the status byte.
    fn execute(&self, request: &Request, data: &[Segment]) -> Result<u32, RequestError> {
        let data_bytes: u64 = data.iter().map(|s| u64::from(s.len)).sum();
        // The used length is 32 bits, so it cannot count longer requests.
        if data_bytes >= u64::from(u32::MAX) {
            return Err(RequestError::Malformed("request larger than 4 GiB"));
        }
        let direction_ok = |writable| data.iter().all(|s| s.writable == writable);
        match request.kind {
            VIRTIO_BLK_T_IN => {
                if !direction_ok(true) || !data_bytes.is_multiple_of(SECTOR_BYTES) {
                    return Err(RequestError::Malformed("bad read buffers"));
                }
                let offset = self.check_range(request.sector, data_bytes)?;
                match self.disk.raw_file() {
                    Some(file) => self.raw_transfer(file, data, offset, Direction::Read)?,
                    None => {
                        self.with_slices(data, |slices| self.disk.read_volatile(slices, offset))?
                    }
                }
                Ok(data_bytes as u32)
            }
            VIRTIO_BLK_T_OUT => {
                if !direction_ok(false) || !data_bytes.is_multiple_of(SECTOR_BYTES) {
                    return Err(RequestError::Malformed("bad write buffers"));
                }
                if self.disk.is_read_only() {
                    return Err(RequestError::ReadOnly);
                }
                let offset = self.check_range(request.sector, data_bytes)?;
                match self.disk.raw_file() {
                    Some(file) => self.raw_transfer(file, data, offset, Direction::Write)?,
                    None => {
                        self.with_slices(data, |slices| self.disk.write_volatile(slices, offset))?
                    }
                }
                Ok(0)
            }
            VIRTIO_BLK_T_FLUSH => {
                self.disk.flush()?;
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                if !direction_ok(true) {
                    return Err(RequestError::Malformed("bad id buffer"));
                }
                let mut written = 0usize;
                for segment in data {
                    let take = (ID_BYTES - written).min(segment.len as usize);
                    self.memory
                        .write_slice(
                            &self.id[written..written + take],
                            GuestAddress(segment.address),
                        )
                        .map_err(|_| segment.outside_memory())?;
                    written += take;
                }
                Ok(written as u32)
            }
            VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
                if self.disk.is_read_only() {
                    return Err(RequestError::ReadOnly);
                }
                self.discard_or_zero(request, data, data_bytes)?;
                Ok(0)
            }
            other => Err(RequestError::Unsupported(other)),
        }
    }

    // DISCARD and WRITE_ZEROES carry one segment descriptor each (we offer
    // max_discard_seg = max_write_zeroes_seg = 1).
    // `data_bytes` is the total length of `data`.
    fn discard_or_zero(
        &self,
        request: &Request,
        data: &[Segment],
        data_bytes: u64,
    ) -> Result<(), RequestError> {
        if data_bytes != DISCARD_SEGMENT_BYTES as u64 || data.iter().any(|s| s.writable) {
            return Err(RequestError::Malformed("bad discard segment"));
        }
        let mut segment = [0u8; DISCARD_SEGMENT_BYTES];
        let mut filled = 0;
        for part in data {
            let len = part.len as usize;
            self.memory
                .read_slice(
                    &mut segment[filled..filled + len],
                    GuestAddress(part.address),
                )
                .map_err(|_| RequestError::Malformed("unreadable discard segment"))?;
            filled += len;
        }
        let sector = u64::from_le_bytes(segment[0..8].try_into().expect("8 bytes"));
        let sectors = u32::from_le_bytes(segment[8..12].try_into().expect("4 bytes"));
        let flags = u32::from_le_bytes(segment[12..16].try_into().expect("4 bytes"));
        let bytes = u64::from(sectors) * SECTOR_BYTES;
        let offset = self.check_range(sector, bytes)?;
        match request.kind {
            VIRTIO_BLK_T_DISCARD if flags != 0 => Err(RequestError::Malformed("discard flags set")),
            VIRTIO_BLK_T_DISCARD => Ok(self.disk.discard(offset, bytes)?),
            _ if flags & !WRITE_ZEROES_FLAG_UNMAP != 0 => {
                Err(RequestError::Malformed("unknown write-zeroes flags"))
            }
            _ => Ok(self.disk.write_zeroes(offset, bytes)?),
        }
    }

    // The guest memory behind `segment`, checked to lie inside it.
    fn guest_slice(
        &self,
        segment: &Segment,
    ) -> Result<vm_memory::VolatileSlice<'_, ()>, RequestError> {
        self.memory
            .get_slice(GuestAddress(segment.address), segment.len as usize)
            .map_err(|_| segment.outside_memory())
    }

    // Reads or writes a raw disk straight between the file and guest
    // memory with one preadv/pwritev per request (repeated after a short
    // transfer), the cheapest path there is for the most common disk.
    fn raw_transfer(
        &self,
        file: &std::fs::File,
        segments: &[Segment],
        offset: u64,
        direction: Direction,
    ) -> Result<(), RequestError> {
        let iovec = |guard: &vm_memory::volatile_memory::PtrGuardMut| libc::iovec {
            iov_base: guard.as_ptr().cast(),
            iov_len: guard.len(),
        };
        // One data buffer is the common case; it needs no vectors.
        if let [single] = segments {
            let guard = self.guest_slice(single)?.ptr_guard_mut();
            return transfer_iovecs(file, &mut [iovec(&guard)], offset, direction);
        }
        let guards = segments
            .iter()
            .map(|segment| Ok(self.guest_slice(segment)?.ptr_guard_mut()))
            .collect::<Result<Vec<_>, RequestError>>()?;
        let mut iovecs: Vec<libc::iovec> = guards.iter().map(iovec).collect();
        transfer_iovecs(file, &mut iovecs, offset, direction)
    }

    // Runs `io` on the guest memory behind `segments`, without allocating
    // for the common single-buffer request.
    fn with_slices(
        &self,
        segments: &[Segment],
        io: impl FnOnce(&[vm_memory::VolatileSlice<'_, ()>]) -> disk::Result<()>,
    ) -> Result<(), RequestError> {
        match segments {
            [single] => Ok(io(&[self.guest_slice(single)?])?),
            _ => {
                let slices = segments
                    .iter()
                    .map(|segment| self.guest_slice(segment))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(io(&slices)?)
            }
        }
    }

    // Serves one chain; returns the bytes written into its buffers,
    // status byte included.
    fn serve_chain(&mut self, chain: DescriptorChain<&GuestMemoryMmap>) -> u32 {
        let head = chain.head_index();
        let mut segments = std::mem::take(&mut self.segments);
        segments.clear();
        let result = Self::collect_segments(chain, &mut segments).and_then(|()| {
            let request = self.parse(&mut segments)?;
            let outcome = self.execute(&request, &segments);
            Ok((request.status, outcome))
        });
        self.segments = segments;

        let (status_address, outcome) = match result {
            Ok((status_address, outcome)) => (Some(status_address), outcome),
            // Without a status byte the only reply is returning the
            // buffers.
            Err(e) => (None, Err(e)),
        };
        let (status, written) = match outcome {
            Ok(written) => (VIRTIO_BLK_S_OK, written),
            Err(e) => {
                self.warn(head, &e);
                (e.status(), 0)
            }
        };
        match status_address {
            Some(address) if self.memory.write_obj(status, GuestAddress(address)).is_ok() => {
                written + 1
            }
            _ => 0,
        }
    }

    fn warn(&mut self, head: u16, error: &RequestError) {
        if !error.is_guest_caused() {
            log::error!("{}: request {head}: {error}", self.name);
            return;
        }
        self.warnings
            .warn(&self.name, format_args!("request {head}: {error}"));
    }
}

impl QueueHandler for BlockHandler {
    fn process_queue(&mut self, _index: usize) {
        let memory = self.requests.memory.clone();
        let requests = &mut self.requests;
        let result = self
            .queue
            .serve(&memory, |chain| requests.serve_chain(chain));
        if let Err(e) = result {
            let requests = &mut self.requests;
            requests
                .warnings
                .warn(&requests.name, format_args!("bad available ring: {e}"));
        }
    }

    fn notify_fds(&self) -> Vec<&EventFd> {
        vec![&self.queue.notify]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use disk::{Access, Format};

    use super::*;
    use crate::virtio::driver::{Buffer, QueueDriver};

    const MIB: u64 = 1 << 20;
    const HEADER: u64 = 0x10_0000;
    const DATA: u64 = 0x20_0000;
    const STATUS: u64 = 0x30_0000;
    const DISK_BYTES: u64 = 4 * MIB;

    struct Harness {
        memory: Arc<GuestMemoryMmap>,
        driver: QueueDriver,
        notify: EventFd,
        device: Block,
        _dir: tempdir::Dir,
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        pub fn new() -> Dir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "vioblk-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }

    fn harness(format: Format, access: Access) -> Harness {
        let dir = tempdir::new();
        let path = dir.0.join("disk.img");
        match format {
            Format::Raw => disk::create_raw(&path, DISK_BYTES).unwrap(),
            Format::Qcow2 => disk::create_qcow2(&path, DISK_BYTES, None).unwrap(),
        }
        let disk = Arc::new(Disk::open(&path, Some(format), access).unwrap());
        let memory = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap());
        let mut device = Block::new("vioblk0".into(), disk, "serial-0123456789abcdef");
        let (driver, notify) = QueueDriver::activate(&mut device, &memory, 0x1000, 64).unwrap();
        Harness {
            memory,
            driver,
            notify,
            device,
            _dir: dir,
        }
    }

    fn readable(address: u64, len: u32) -> Buffer {
        Buffer {
            address,
            len,
            device_writable: false,
        }
    }

    fn writable(address: u64, len: u32) -> Buffer {
        Buffer {
            address,
            len,
            device_writable: true,
        }
    }

    impl Harness {
        fn header(&self, kind: u32, sector: u64) {
            let mut bytes = [0u8; 16];
            bytes[0..4].copy_from_slice(&kind.to_le_bytes());
            bytes[8..16].copy_from_slice(&sector.to_le_bytes());
            self.memory
                .write_slice(&bytes, GuestAddress(HEADER))
                .unwrap();
            self.memory.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        }

        // Submits `buffers` and returns (used length, status byte).
        fn submit(&mut self, buffers: &[Buffer]) -> (u32, u8) {
            let head = self.driver.add_request(&self.memory, buffers).unwrap();
            self.notify.write(1).unwrap();
            let (used_head, len) = self
                .driver
                .wait_used(&self.memory, Duration::from_secs(5))
                .unwrap_or_else(|| panic!("request {head} never completed"));
            assert_eq!(used_head, head);
            let status: u8 = self.memory.read_obj(GuestAddress(STATUS)).unwrap();
            (len, status)
        }

        fn request(&mut self, kind: u32, sector: u64, data: &[Buffer]) -> (u32, u8) {
            self.header(kind, sector);
            let mut buffers = vec![readable(HEADER, 16)];
            buffers.extend_from_slice(data);
            buffers.push(writable(STATUS, 1));
            self.submit(&buffers)
        }

        fn fill(&self, address: u64, len: usize, value: u8) {
            self.memory
                .write_slice(&vec![value; len], GuestAddress(address))
                .unwrap();
        }

        fn bytes(&self, address: u64, len: usize) -> Vec<u8> {
            let mut bytes = vec![0u8; len];
            self.memory
                .read_slice(&mut bytes, GuestAddress(address))
                .unwrap();
            bytes
        }

        fn discard_segment(&self, address: u64, sector: u64, sectors: u32, flags: u32) {
            let mut bytes = [0u8; 16];
            bytes[0..8].copy_from_slice(&sector.to_le_bytes());
            bytes[8..12].copy_from_slice(&sectors.to_le_bytes());
            bytes[12..16].copy_from_slice(&flags.to_le_bytes());
            self.memory
                .write_slice(&bytes, GuestAddress(address))
                .unwrap();
        }
    }

    #[test]
    fn write_then_read_round_trips_on_raw_and_qcow2() {
        for format in [Format::Raw, Format::Qcow2] {
            let mut h = harness(format, Access::ReadWrite);
            h.fill(DATA, 4096, 0xa5);
            h.fill(DATA + 0x10000, 512, 0x5a);
            let out = h.request(
                VIRTIO_BLK_T_OUT,
                8,
                &[readable(DATA, 4096), readable(DATA + 0x10000, 512)],
            );
            assert_eq!(out, (1, VIRTIO_BLK_S_OK), "{format:?} write");
            h.fill(DATA + 0x40000, 4608, 0);
            let read = h.request(VIRTIO_BLK_T_IN, 8, &[writable(DATA + 0x40000, 4608)]);
            assert_eq!(read, (4609, VIRTIO_BLK_S_OK), "{format:?} read");
            let mut expected = vec![0xa5; 4096];
            expected.extend_from_slice(&[0x5a; 512]);
            assert_eq!(h.bytes(DATA + 0x40000, 4608), expected, "{format:?} data");
            // The same sectors read into two buffers.
            h.fill(DATA + 0x50000, 4608, 0);
            let read = h.request(
                VIRTIO_BLK_T_IN,
                8,
                &[
                    writable(DATA + 0x50000, 1024),
                    writable(DATA + 0x60000, 3584),
                ],
            );
            assert_eq!(read, (4609, VIRTIO_BLK_S_OK), "{format:?} split read");
            let mut split = h.bytes(DATA + 0x50000, 1024);
            split.extend(h.bytes(DATA + 0x60000, 3584));
            assert_eq!(split, expected, "{format:?} split data");
        }
    }

    #[test]
    fn header_split_across_descriptors_is_accepted() {
        let mut h = harness(Format::Raw, Access::ReadWrite);
        h.header(VIRTIO_BLK_T_IN, 0);
        let result = h.submit(&[
            readable(HEADER, 7),
            readable(HEADER + 7, 9),
            writable(DATA, 512),
            writable(STATUS, 1),
        ]);
        assert_eq!(result, (513, VIRTIO_BLK_S_OK));
    }

    #[test]
    fn flush_succeeds() {
        let mut h = harness(Format::Qcow2, Access::ReadWrite);
        assert_eq!(h.request(VIRTIO_BLK_T_FLUSH, 0, &[]), (1, VIRTIO_BLK_S_OK));
    }

    #[test]
    fn get_id_returns_serial() {
        let mut h = harness(Format::Raw, Access::ReadWrite);
        let result = h.request(VIRTIO_BLK_T_GET_ID, 0, &[writable(DATA, 20)]);
        assert_eq!(result, (21, VIRTIO_BLK_S_OK));
        assert_eq!(h.bytes(DATA, 20), b"serial-0123456789abc");
    }

    #[test]
    fn discard_and_write_zeroes_clear_data() {
        for (kind, flags) in [(VIRTIO_BLK_T_DISCARD, 0), (VIRTIO_BLK_T_WRITE_ZEROES, 1)] {
            for format in [Format::Raw, Format::Qcow2] {
                let mut h = harness(format, Access::ReadWrite);
                h.fill(DATA, 65536, 0x77);
                assert_eq!(
                    h.request(VIRTIO_BLK_T_OUT, 128, &[readable(DATA, 65536)]).1,
                    VIRTIO_BLK_S_OK
                );
                h.discard_segment(DATA + 0x20000, 128, 128, flags);
                let result = h.request(kind, 0, &[readable(DATA + 0x20000, 16)]);
                assert_eq!(result, (1, VIRTIO_BLK_S_OK), "type {kind} on {format:?}");
                h.fill(DATA, 65536, 0xee);
                h.request(VIRTIO_BLK_T_IN, 128, &[writable(DATA, 65536)]);
                assert_eq!(
                    h.bytes(DATA, 65536),
                    vec![0; 65536],
                    "type {kind} on {format:?}"
                );
            }
        }
    }

    #[test]
    fn unknown_request_type_is_unsupported() {
        let mut h = harness(Format::Raw, Access::ReadWrite);
        assert_eq!(h.request(99, 0, &[]), (1, VIRTIO_BLK_S_UNSUPP));
    }

    #[test]
    fn read_beyond_end_is_io_error() {
        let mut h = harness(Format::Raw, Access::ReadWrite);
        let last_sector = DISK_BYTES / SECTOR_BYTES;
        let result = h.request(VIRTIO_BLK_T_IN, last_sector, &[writable(DATA, 512)]);
        assert_eq!(result, (1, VIRTIO_BLK_S_IOERR));
        let result = h.request(VIRTIO_BLK_T_IN, u64::MAX, &[writable(DATA, 512)]);
        assert_eq!(result, (1, VIRTIO_BLK_S_IOERR));
    }

    #[test]
    fn partial_sector_is_io_error() {
        let mut h = harness(Format::Raw, Access::ReadWrite);
        let result = h.request(VIRTIO_BLK_T_IN, 0, &[writable(DATA, 100)]);
        assert_eq!(result, (1, VIRTIO_BLK_S_IOERR));
    }

    #[test]
    fn buffer_outside_memory_is_io_error() {
        let mut h = harness(Format::Raw, Access::ReadWrite);
        let result = h.request(VIRTIO_BLK_T_IN, 0, &[writable(0x1_0000_0000, 512)]);
        assert_eq!(result, (1, VIRTIO_BLK_S_IOERR));
        // The device goes on serving good requests.
        assert_eq!(
            h.request(VIRTIO_BLK_T_IN, 0, &[writable(DATA, 512)]),
            (513, VIRTIO_BLK_S_OK)
        );
    }

    #[test]
    fn missing_status_byte_returns_buffers() {
        let mut h = harness(Format::Raw, Access::ReadWrite);
        h.header(VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            h.submit(&[readable(HEADER, 16), readable(DATA, 512)]),
            (0, 0xff)
        );
    }

    #[test]
    fn read_only_disk_rejects_writes() {
        let mut h = harness(Format::Raw, Access::ReadOnly);
        assert_ne!(h.device.device_features() & VIRTIO_BLK_F_RO, 0);
        assert_eq!(h.device.device_features() & VIRTIO_BLK_F_DISCARD, 0);
        let result = h.request(VIRTIO_BLK_T_OUT, 0, &[readable(DATA, 512)]);
        assert_eq!(result, (1, VIRTIO_BLK_S_IOERR));
        h.discard_segment(DATA, 0, 1, 0);
        let result = h.request(VIRTIO_BLK_T_DISCARD, 0, &[readable(DATA, 16)]);
        assert_eq!(result, (1, VIRTIO_BLK_S_IOERR));
        assert_eq!(
            h.request(VIRTIO_BLK_T_IN, 0, &[writable(DATA, 512)]),
            (513, VIRTIO_BLK_S_OK)
        );
    }

    #[test]
    fn write_in_read_direction_is_io_error() {
        let mut h = harness(Format::Raw, Access::ReadWrite);
        let result = h.request(VIRTIO_BLK_T_OUT, 0, &[writable(DATA, 512)]);
        assert_eq!(result, (1, VIRTIO_BLK_S_IOERR));
    }

    #[test]
    fn config_space_reports_capacity_and_limits() {
        let h = harness(Format::Raw, Access::ReadWrite);
        let mut capacity = [0u8; 8];
        h.device.read_config(0, &mut capacity);
        assert_eq!(u64::from_le_bytes(capacity), DISK_BYTES / SECTOR_BYTES);
        let mut seg_max = [0u8; 4];
        h.device.read_config(12, &mut seg_max);
        assert_eq!(u32::from_le_bytes(seg_max), SEG_MAX);
        let mut beyond = [0xffu8; 4];
        h.device.read_config(200, &mut beyond);
        assert_eq!(beyond, [0; 4]);
    }
}

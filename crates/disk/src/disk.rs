//! The device-facing disk handle: byte-offset I/O on an opened chain.
//!
//! A raw top image is read and written with pread/pwrite on its descriptor.
//! A qcow2 top image goes through the imago qcow2 driver, which allocates
//! and copy-on-writes clusters and keeps refcounts. Its backing images are
//! opened the same way, read-only. Building a [`Disk`] from a [`Chain`]
//! never opens a path, so it works inside a process without filesystem
//! access.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use imago::file::File as ImagoFile;
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, StorageOpenOptions};
use nix::fcntl::{FallocateFlags, fallocate};
use vm_memory::VolatileSlice;
use vm_memory::bitmap::BitmapSlice;

use crate::chain::{self, Access, Chain, ChainFile, Format, MAX_CHAIN_FILES};
use crate::error::{Error, Problem, Result};
use crate::{header, metadata};

/// One image format layer of the imago driver, over an open file.
type Layer = FormatAccess<ImagoFile>;

/// An open disk: a top image and its backing chain.
///
/// Every I/O method blocks the calling thread until the system calls behind
/// it return. Reads and writes issue pread/pwrite, and a qcow2 write may
/// also read and write metadata and copy a cluster from a backing image.
/// [`Disk::flush`] waits for fdatasync. A device should call them from its
/// own thread, never from a vCPU thread.
///
/// `Disk` is `Send` and `Sync`. Reads, writes and write-zeroes may run
/// concurrently from several threads; a qcow2 discard waits for them and
/// runs alone.
pub struct Disk {
    path: PathBuf,
    access: Access,
    size: u64,
    backend: Backend,
}

enum Backend {
    /// A raw top image: `file` serves plain buffers, `layer` (on the same
    /// open file) serves guest memory slices.
    Raw { file: File, layer: Layer },
    /// A qcow2 top image. The write lock is taken only by discard, which
    /// may free clusters that concurrent requests still map.
    Qcow2 {
        layer: RwLock<Layer>,
        /// Whether the image has zero clusters (version 3). Version 2
        /// images get zeroes written as data instead.
        zero_clusters: bool,
    },
}

impl Disk {
    /// Opens the image at `path` with its backing chain, in one step.
    ///
    /// This is [`chain::open_chain`] followed by [`Disk::from_chain`], for
    /// tools and tests that have filesystem access.
    pub fn open(path: &Path, format: Option<Format>, access: Access) -> Result<Disk> {
        Disk::from_chain(chain::open_chain(path, format, access)?)
    }

    /// Builds a disk from files that were already opened, for example
    /// descriptors received from the parent process.
    ///
    /// Opens no path: a header that names a backing file must be matched by
    /// the next file in `chain`, and the last file must name none. Each
    /// qcow2 header and table is validated before the qcow2 driver sees it.
    pub fn from_chain(chain: Chain) -> Result<Disk> {
        let Chain { access, mut files } = chain;
        let Some(top) = files.first() else {
            return Err(Error::new(
                "",
                Problem::ChainMismatch {
                    detail: "no files given",
                },
            ));
        };
        if files.len() > MAX_CHAIN_FILES {
            return Err(Error::new(
                &top.path,
                Problem::ChainTooLong {
                    limit: MAX_CHAIN_FILES,
                },
            ));
        }
        let path = top.path.clone();

        // Build from the last base up, so each layer can take the one below
        // it as its backing image.
        let mut backing: Option<Layer> = None;
        let mut zero_clusters = false;
        while let Some(chain_file) = files.pop() {
            if chain_file.format == Format::Raw && backing.is_some() {
                return Err(Error::new(
                    &chain_file.path,
                    Problem::ChainMismatch {
                        detail: "a raw image cannot have a backing file",
                    },
                ));
            }
            let writable = files.is_empty() && access == Access::ReadWrite;
            if files.is_empty() && chain_file.format == Format::Raw {
                return Disk::from_raw_file(chain_file, access);
            }
            let (layer, version) = open_layer(chain_file, writable, backing)?;
            backing = Some(layer);
            zero_clusters = version.is_some_and(|version| version >= 3);
        }
        let layer = backing.expect("the loop ran at least once for the top image");

        Ok(Disk {
            path,
            access,
            size: layer.size(),
            backend: Backend::Qcow2 {
                layer: RwLock::new(layer),
                zero_clusters,
            },
        })
    }

    /// Builds a disk whose top image is raw.
    fn from_raw_file(chain_file: ChainFile, access: Access) -> Result<Disk> {
        let ChainFile { path, file, .. } = chain_file;
        let size = chain::file_size(&file, &path)?;
        let writable = access == Access::ReadWrite;
        let layer_file = file
            .try_clone()
            .map_err(|source| Error::new(&path, Problem::Open(source)))?;
        let layer = open_raw_layer(layer_file, &path, writable)?;

        Ok(Disk {
            path,
            access,
            size,
            backend: Backend::Raw { file, layer },
        })
    }

    /// Returns the top image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the top image's format.
    pub fn format(&self) -> Format {
        match self.backend {
            Backend::Raw { .. } => Format::Raw,
            Backend::Qcow2 { .. } => Format::Qcow2,
        }
    }

    /// Returns the disk size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Returns the open file of a raw disk, for callers that transfer data
    /// with their own system calls (positional I/O at the disk's byte
    /// offsets); None for qcow2, whose bytes need the driver's mapping.
    pub fn raw_file(&self) -> Option<&File> {
        match &self.backend {
            Backend::Raw { file, .. } => Some(file),
            Backend::Qcow2 { .. } => None,
        }
    }

    /// Returns whether writes are rejected.
    pub fn is_read_only(&self) -> bool {
        self.access == Access::ReadOnly
    }

    /// Reads `buf.len()` bytes at byte `offset`.
    ///
    /// Unallocated and zero clusters read as zeroes, unless a backing image
    /// has data there; compressed clusters are decompressed.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let result = match &self.backend {
            Backend::Raw { file, .. } => read_raw(file, buf, offset),
            Backend::Qcow2 { layer, .. } => self.read_layer(layer).read(buf, offset),
        };
        result.map_err(|source| self.error(Problem::Read { offset, source }))
    }

    /// Writes `buf` at byte `offset`.
    ///
    /// The data is in the page cache when this returns; only
    /// [`Disk::flush`] makes it durable.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, buf.len() as u64)?;
        let result = match &self.backend {
            Backend::Raw { file, .. } => file.write_all_at(buf, offset),
            Backend::Qcow2 { layer, .. } => self.read_layer(layer).write(buf, offset),
        };
        result.map_err(|source| self.error(Problem::Write { offset, source }))
    }

    /// Reads into guest memory `slices`, in order, from byte `offset`,
    /// without an intermediate buffer.
    pub fn read_volatile<B: BitmapSlice>(
        &self,
        slices: &[VolatileSlice<'_, B>],
        offset: u64,
    ) -> Result<()> {
        let length = slices.iter().map(|slice| slice.len() as u64).sum();
        self.check_range(offset, length)?;
        let (vector, _guard) = IoVectorMut::from_volatile_slice(slices);
        let result = match &self.backend {
            Backend::Raw { layer, .. } => layer.readv(vector, offset),
            Backend::Qcow2 { layer, .. } => self.read_layer(layer).readv(vector, offset),
        };
        result.map_err(|source| self.error(Problem::Read { offset, source }))
    }

    /// Writes guest memory `slices`, in order, at byte `offset`, without an
    /// intermediate buffer.
    pub fn write_volatile<B: BitmapSlice>(
        &self,
        slices: &[VolatileSlice<'_, B>],
        offset: u64,
    ) -> Result<()> {
        self.check_writable()?;
        let length = slices.iter().map(|slice| slice.len() as u64).sum();
        self.check_range(offset, length)?;
        let (vector, _guard) = IoVector::from_volatile_slice(slices);
        let result = match &self.backend {
            Backend::Raw { layer, .. } => layer.writev(vector, offset),
            Backend::Qcow2 { layer, .. } => self.read_layer(layer).writev(vector, offset),
        };
        result.map_err(|source| self.error(Problem::Write { offset, source }))
    }

    /// Writes back cached qcow2 metadata and waits until all data written so
    /// far is on stable storage (fdatasync).
    ///
    /// Data written before a flush that returned `Ok` survives a crash of
    /// this process or of the host. On a read-only disk this does nothing.
    pub fn flush(&self) -> Result<()> {
        if self.is_read_only() {
            return Ok(());
        }
        let result = match &self.backend {
            Backend::Raw { file, .. } => file.sync_data(),
            Backend::Qcow2 { layer, .. } => {
                let layer = self.read_layer(layer);
                layer.flush().and_then(|()| layer.sync())
            }
        };
        result.map_err(|source| self.error(Problem::Flush(source)))
    }

    /// Makes `length` bytes at `offset` read as zeroes, keeping them
    /// allocated where that is cheaper.
    pub fn write_zeroes(&self, offset: u64, length: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, length)?;
        let result = match &self.backend {
            Backend::Raw { file, .. } => {
                zero_raw(file, offset, length, FallocateFlags::FALLOC_FL_ZERO_RANGE)
            }
            Backend::Qcow2 {
                layer,
                zero_clusters: true,
            } => self.read_layer(layer).write_zeroes(offset, length),
            Backend::Qcow2 { layer, .. } => self.write_zero_data(layer, offset, length),
        };
        result.map_err(|source| self.error(Problem::WriteZeroes { offset, source }))
    }

    /// Releases the storage of `length` bytes at `offset`; the range reads
    /// as zeroes afterwards.
    ///
    /// qcow2 clusters fully inside the range are freed (their refcounts
    /// drop) and marked zero, so a backing image does not show through.
    /// Partial clusters, and all clusters of a version 2 image, which has
    /// no zero flag, are overwritten with zeroes. Raw files get a hole
    /// punched where the filesystem supports it and zeroes written
    /// elsewhere.
    pub fn discard(&self, offset: u64, length: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, length)?;
        let result = match &self.backend {
            Backend::Raw { file, .. } => {
                zero_raw(file, offset, length, FallocateFlags::FALLOC_FL_PUNCH_HOLE)
            }
            Backend::Qcow2 {
                layer,
                zero_clusters: true,
            } => {
                let mut layer = layer
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                layer.discard_to_zero(offset, length)
            }
            Backend::Qcow2 { layer, .. } => self.write_zero_data(layer, offset, length),
        };
        result.map_err(|source| self.error(Problem::Discard { offset, source }))
    }

    /// Takes the shared lock on a qcow2 layer. A panic in another request
    /// leaves no half-done state in the lock itself, so poisoning is
    /// ignored.
    fn read_layer<'a>(&self, layer: &'a RwLock<Layer>) -> std::sync::RwLockReadGuard<'a, Layer> {
        layer
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes zeroes as data, 1 MiB at a time, for qcow2 version 2 images,
    /// which cannot mark clusters as zero. Freeing clusters instead would
    /// let a backing image show through.
    fn write_zero_data(&self, layer: &RwLock<Layer>, offset: u64, length: u64) -> io::Result<()> {
        let layer = self.read_layer(layer);
        write_zero_blocks(offset, length, |zeroes, at| layer.write(zeroes, at))
    }

    fn check_writable(&self) -> Result<()> {
        if self.is_read_only() {
            return Err(self.error(Problem::ReadOnly));
        }
        Ok(())
    }

    fn check_range(&self, offset: u64, length: u64) -> Result<()> {
        let inside = offset
            .checked_add(length)
            .is_some_and(|end| end <= self.size);
        if !inside {
            return Err(self.error(Problem::OutOfRange {
                offset,
                length,
                size: self.size,
            }));
        }
        Ok(())
    }

    fn error(&self, problem: Problem) -> Error {
        Error::new(&self.path, problem)
    }
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("path", &self.path)
            .field("format", &self.format())
            .field("access", &self.access)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Validates one chain file and opens it as an imago layer over `backing`.
/// Returns the layer and, for qcow2, the image version.
fn open_layer(
    chain_file: ChainFile,
    writable: bool,
    backing: Option<Layer>,
) -> Result<(Layer, Option<u32>)> {
    let ChainFile { path, format, file } = chain_file;
    if format == Format::Raw {
        // from_chain has refused a raw image with a backing file.
        return Ok((open_raw_layer(file, &path, writable)?, None));
    }

    let file_size = chain::file_size(&file, &path)?;
    let qcow2_header =
        header::parse(&file, file_size).map_err(|problem| Error::new(&path, problem))?;
    match (&qcow2_header.backing_name, &backing) {
        (Some(_), None) => {
            return Err(Error::new(
                &path,
                Problem::ChainMismatch {
                    detail: "the header names a backing file but none was given",
                },
            ));
        }
        (None, Some(_)) => {
            return Err(Error::new(
                &path,
                Problem::ChainMismatch {
                    detail: "a backing file was given but the header names none",
                },
            ));
        }
        _ => {}
    }
    metadata::check_tables(&file, &qcow2_header, file_size)
        .map_err(|problem| Error::new(&path, problem))?;

    let storage = imago_file(file, &path, writable)?;
    let qcow2 = Qcow2::<ImagoFile>::builder(storage)
        .write(writable)
        .backing(backing)
        .data_file(None)
        .open(DenyImplicitOpenGate::default())
        .map_err(|source| Error::new(&path, Problem::OpenQcow2(source)))?;
    Ok((FormatAccess::new(qcow2), Some(qcow2_header.version)))
}

/// Opens a raw file as an imago layer.
fn open_raw_layer(file: File, path: &Path, writable: bool) -> Result<Layer> {
    let storage = imago_file(file, path, writable)?;
    let raw = Raw::builder(storage)
        .write(writable)
        .open(DenyImplicitOpenGate::default())
        .map_err(|source| Error::new(path, Problem::Open(source)))?;
    Ok(FormatAccess::new(raw))
}

/// Wraps an open file for imago, keeping its path for imago's own messages.
fn imago_file(file: File, path: &Path, writable: bool) -> Result<ImagoFile> {
    let options = StorageOpenOptions::new().write(writable).filename(path);
    ImagoFile::from_open_file(file, options)
        .map_err(|source| Error::new(path, Problem::Open(source)))
}

/// Reads a raw file at `offset`; bytes past its end read as zeroes.
fn read_raw(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let length = header::read_full_at(file, buf, offset)?;
    buf[length..].fill(0);
    Ok(())
}

/// Zeroes a range of a raw file with fallocate `mode`, falling back to
/// writing zeroes where the filesystem does not support it.
fn zero_raw(file: &File, offset: u64, length: u64, mode: FallocateFlags) -> io::Result<()> {
    let (Ok(start), Ok(count)) = (i64::try_from(offset), i64::try_from(length)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    if length == 0 {
        return Ok(());
    }
    match fallocate(
        file,
        mode | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        start,
        count,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            write_zero_blocks(offset, length, |zeroes, at| file.write_all_at(zeroes, at))
        }
        Err(errno) => Err(errno.into()),
    }
}

/// Writes zeroes over `offset..offset + length` with `write`, 1 MiB at a
/// time.
fn write_zero_blocks(
    offset: u64,
    length: u64,
    mut write: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    const BLOCK_BYTES: u64 = 1 << 20;
    let zeroes = vec![0u8; BLOCK_BYTES.min(length) as usize];
    let mut done = 0;
    while done < length {
        let count = (length - done).min(BLOCK_BYTES) as usize;
        write(&zeroes[..count], offset + done)?;
        done += count as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn disk_is_send_and_sync() {
        assert_send_sync::<Disk>();
    }
}

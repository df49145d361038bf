//! Errors of the disk crate: which image file failed and why.
//!
//! Every error names the image file it concerns. The problem text holds only
//! this layer's context; an underlying I/O error is the error's `source()`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Result type of the disk crate.
pub type Result<T> = std::result::Result<T, Error>;

/// An error on one image file of a disk.
///
/// Displays as `disk PATH: PROBLEM`, for example
/// `disk /var/vm/a.qcow2: unsupported qcow2 feature: external data file`.
#[derive(Debug)]
pub struct Error {
    path: PathBuf,
    problem: Problem,
}

/// The broad class of an error, for callers that must branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The image is malformed: a bad header, table or backing chain.
    InvalidFormat,
    /// The image is well formed but uses something this crate does not do.
    UnsupportedFeature,
    /// A system call failed, or a request does not fit the disk.
    Io,
    /// The image file or one of its backing files does not exist.
    NotFound,
}

impl Error {
    /// Creates an error about the image file at `path`.
    pub(crate) fn new(path: impl Into<PathBuf>, problem: Problem) -> Self {
        Error {
            path: path.into(),
            problem,
        }
    }

    /// Returns the image file the error concerns.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns what went wrong.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// Returns the broad class of the error.
    pub fn kind(&self) -> ErrorKind {
        self.problem.kind()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "disk {}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.problem)
    }
}

/// What went wrong with an image file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The image file could not be opened.
    #[error("cannot open image")]
    Open(#[source] io::Error),
    /// Another process holds a conflicting lock on the image file.
    #[error("image is in use by another process (locked)")]
    Locked,
    /// Locking the image file failed for a reason other than a conflict.
    #[error("cannot lock image")]
    Lock(#[source] io::Error),
    /// The image file's attributes could not be read.
    #[error("cannot read file attributes")]
    Stat(#[source] io::Error),
    /// A backing file named in the image header does not exist or cannot be
    /// opened.
    #[error("missing backing image {backing}")]
    MissingBacking {
        /// The resolved path of the backing file.
        backing: PathBuf,
        /// Why opening it failed.
        #[source]
        source: io::Error,
    },
    /// The backing chain has more files than allowed.
    #[error("backing chain is longer than {limit} files")]
    ChainTooLong {
        /// The maximum number of files per disk, top image included.
        limit: usize,
    },
    /// A backing file is already part of the chain above it.
    #[error("backing chain loops back to {backing}")]
    BackingLoop {
        /// The resolved path of the backing file that closes the loop.
        backing: PathBuf,
    },
    /// Opened files handed over for a chain do not match the image headers.
    #[error("backing chain does not match the image headers: {detail}")]
    ChainMismatch {
        /// Which part does not match.
        detail: &'static str,
    },
    /// The image is shorter than the qcow2 header it claims to have.
    #[error("qcow2 header too short: {length} bytes, minimum {minimum}")]
    HeaderTooShort {
        /// The length found, of the file or in the header_length field.
        length: u64,
        /// The minimum for this qcow2 version.
        minimum: u64,
    },
    /// The image was expected to be qcow2 but has no qcow2 magic.
    #[error("not a qcow2 image")]
    NotQcow2,
    /// The qcow2 version is neither 2 nor 3.
    #[error("unsupported qcow2 version {0}")]
    UnsupportedVersion(u32),
    /// The header_length field is not a multiple of 8 or exceeds a cluster.
    #[error("invalid qcow2 header length {length}")]
    InvalidHeaderLength {
        /// The header_length field.
        length: u32,
    },
    /// cluster_bits is outside 9..=21 (512 B to 2 MiB clusters).
    #[error("invalid cluster_bits {0}, allowed 9 to 21")]
    InvalidClusterBits(u32),
    /// refcount_order is outside 0..=6 (1 to 64 bit refcounts).
    #[error("invalid refcount_order {0}, allowed 0 to 6")]
    InvalidRefcountOrder(u32),
    /// The image uses a qcow2 feature this crate does not implement.
    #[error("unsupported qcow2 feature: {0}")]
    UnsupportedFeature(Feature),
    /// The corrupt bit is set in the header.
    #[error("image is marked corrupt, check it with qemu-img check")]
    MarkedCorrupt,
    /// The backing file name is longer than the qcow2 limit.
    #[error("backing file name is {length} bytes long, maximum 1023")]
    BackingNameTooLong {
        /// backing_file_size from the header.
        length: u32,
    },
    /// The backing file name does not lie inside the header cluster and the
    /// file.
    #[error("backing file name at {offset:#x} ({length} bytes) is outside the header cluster")]
    BackingNameOutOfBounds {
        /// backing_file_offset from the header.
        offset: u64,
        /// backing_file_size from the header.
        length: u32,
    },
    /// The backing file name is empty or not UTF-8.
    #[error("backing file name is empty or not UTF-8")]
    InvalidBackingName,
    /// The backing format extension names a format other than raw or qcow2.
    #[error("unsupported backing format \"{0}\"")]
    UnsupportedBackingFormat(String),
    /// A header extension runs past the header cluster.
    #[error("header extension at {offset:#x} runs past the header cluster")]
    HeaderExtensionOutOfBounds {
        /// Offset of the extension's type field.
        offset: u64,
    },
    /// The disk size is too large for qcow2 offsets.
    #[error("disk size {size} is too large")]
    DiskSizeTooLarge {
        /// The size field of the header.
        size: u64,
    },
    /// The L1 table has fewer entries than the disk size needs.
    #[error("L1 table has {entries} entries, the disk size needs {needed}")]
    L1TooSmall {
        /// l1_size from the header.
        entries: u32,
        /// Entries needed to map the disk size.
        needed: u64,
    },
    /// The L1 table has more entries than any image needs.
    #[error("L1 table has {entries} entries, maximum {maximum}")]
    L1TooLarge {
        /// l1_size from the header.
        entries: u32,
        /// The limit (32 MiB of entries, as QEMU).
        maximum: u32,
    },
    /// A metadata table starts at an offset that is not cluster aligned.
    #[error("{table} at {offset:#x} is not cluster aligned")]
    UnalignedTable {
        /// Which table: "L1 table", "refcount table" or "L2 table".
        table: &'static str,
        /// Its offset in the file.
        offset: u64,
    },
    /// A metadata table lies (partly) beyond the end of the file.
    #[error(
        "{table} at {offset:#x} ({length} bytes) extends beyond the end of the file at {file_size:#x}"
    )]
    TableBeyondEof {
        /// Which table: "L1 table", "refcount table" or "L2 table".
        table: &'static str,
        /// Its offset in the file.
        offset: u64,
        /// Its length in bytes.
        length: u64,
        /// The file size.
        file_size: u64,
    },
    /// The refcount table has more clusters than any image needs.
    #[error("refcount table has {clusters} clusters, maximum {maximum}")]
    RefcountTableTooLarge {
        /// refcount_table_clusters from the header.
        clusters: u32,
        /// The limit (8 MiB of table, as QEMU).
        maximum: u32,
    },
    /// An L2 entry maps guest data outside the file or to an unaligned
    /// offset.
    #[error(
        "L2 entry for guest offset {guest_offset:#x} points to {host_offset:#x}, outside the file or unaligned"
    )]
    L2EntryOutsideFile {
        /// The first guest byte the entry maps.
        guest_offset: u64,
        /// The host offset in the entry.
        host_offset: u64,
    },
    /// An L2 entry has reserved bits set.
    #[error("L2 entry for guest offset {guest_offset:#x} has reserved bits set")]
    L2EntryReservedBits {
        /// The first guest byte the entry maps.
        guest_offset: u64,
    },
    /// A compressed cluster descriptor points outside the file.
    #[error(
        "compressed cluster for guest offset {guest_offset:#x} at {host_offset:#x} ({length} bytes) is outside the file"
    )]
    InvalidCompressedCluster {
        /// The first guest byte the entry maps.
        guest_offset: u64,
        /// Where the compressed data starts.
        host_offset: u64,
        /// The upper bound of its length from the descriptor.
        length: u64,
    },
    /// The qcow2 driver rejected the image after the header checks passed.
    #[error("cannot open qcow2 image")]
    OpenQcow2(#[source] io::Error),
    /// Reading metadata (header or tables) failed.
    #[error("cannot read {what} at {offset:#x}")]
    ReadMetadata {
        /// What was being read.
        what: &'static str,
        /// Its offset in the file.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A write was requested on a disk opened read-only.
    #[error("disk is read-only")]
    ReadOnly,
    /// A request lies beyond the disk size.
    #[error("request at {offset:#x} ({length} bytes) is beyond the disk size {size:#x}")]
    OutOfRange {
        /// The first byte of the request.
        offset: u64,
        /// Its length in bytes.
        length: u64,
        /// The disk size in bytes.
        size: u64,
    },
    /// A read failed.
    #[error("read at {offset:#x} failed")]
    Read {
        /// The first guest byte of the request.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A write failed.
    #[error("write at {offset:#x} failed")]
    Write {
        /// The first guest byte of the request.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing zeroes failed.
    #[error("write zeroes at {offset:#x} failed")]
    WriteZeroes {
        /// The first guest byte of the request.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A discard failed.
    #[error("discard at {offset:#x} failed")]
    Discard {
        /// The first guest byte of the request.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing back metadata or syncing to stable storage failed.
    #[error("flush failed")]
    Flush(#[source] io::Error),
    /// Creating a new image failed.
    #[error("cannot create image")]
    Create(#[source] io::Error),
}

impl Problem {
    /// Returns the broad class of this problem.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Problem::Open(source) if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Problem::MissingBacking { .. } => ErrorKind::NotFound,
            Problem::UnsupportedFeature(_)
            | Problem::UnsupportedVersion(_)
            | Problem::UnsupportedBackingFormat(_) => ErrorKind::UnsupportedFeature,
            Problem::Open(_)
            | Problem::Locked
            | Problem::Lock(_)
            | Problem::Stat(_)
            | Problem::ReadMetadata { .. }
            | Problem::ReadOnly
            | Problem::OutOfRange { .. }
            | Problem::Read { .. }
            | Problem::Write { .. }
            | Problem::WriteZeroes { .. }
            | Problem::Discard { .. }
            | Problem::Flush(_)
            | Problem::Create(_) => ErrorKind::Io,
            _ => ErrorKind::InvalidFormat,
        }
    }
}

/// A qcow2 feature that this crate rejects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// The dirty bit: refcounts may be stale after lazy refcount updates.
    Dirty,
    /// Guest data lives in a separate file.
    ExternalDataFile,
    /// Compressed clusters use a method other than zlib (1 is zstd).
    CompressionType(u8),
    /// L2 entries with subcluster allocation bitmaps.
    ExtendedL2,
    /// Incompatible feature bits this crate does not know.
    UnknownIncompatible(u64),
    /// Encrypted clusters (crypt_method 1 is AES, 2 is LUKS).
    Encryption {
        /// crypt_method from the header.
        method: u32,
    },
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Feature::Dirty => write!(
                f,
                "dirty bit set (lazy refcounts), repair with qemu-img check -r all"
            ),
            Feature::ExternalDataFile => write!(f, "external data file"),
            Feature::CompressionType(1) => write!(f, "zstd compression"),
            Feature::CompressionType(kind) => write!(f, "compression type {kind}"),
            Feature::ExtendedL2 => write!(f, "extended L2 entries"),
            Feature::UnknownIncompatible(bits) => {
                write!(f, "unknown incompatible feature bits {bits:#x}")
            }
            Feature::Encryption { method: 1 } => write!(f, "AES encryption"),
            Feature::Encryption { method: 2 } => write!(f, "LUKS encryption"),
            Feature::Encryption { method } => write!(f, "encryption method {method}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_and_problem() {
        let error = Error::new(
            "/var/vm/a.qcow2",
            Problem::UnsupportedFeature(Feature::ExternalDataFile),
        );

        assert_eq!(
            error.to_string(),
            "disk /var/vm/a.qcow2: unsupported qcow2 feature: external data file"
        );
        assert_eq!(error.kind(), ErrorKind::UnsupportedFeature);
    }

    #[test]
    fn missing_file_is_not_found() {
        let error = Error::new(
            "/nonexistent",
            Problem::Open(io::Error::from(io::ErrorKind::NotFound)),
        );

        assert_eq!(error.kind(), ErrorKind::NotFound);
    }
}

//! Opening a backing chain by path, the privileged half of a disk open.
//!
//! The parent process opens every file of a disk here: the top image
//! read-write under an exclusive lock, each base read-only under a shared
//! lock. The resulting [`Chain`] of open files is what the sandboxed vm
//! process turns into a [`Disk`](crate::Disk) without touching any path.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Seek};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Problem, Result};
use crate::header;

/// Maximum number of files in one disk's chain, the top image included
/// (OpenBSD's VM_MAX_BASE_PER_DISK).
pub const MAX_CHAIN_FILES: usize = 4;

/// Image file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// A plain file holding the disk bytes.
    Raw,
    /// QEMU copy-on-write version 2 or 3.
    Qcow2,
}

impl Format {
    /// Returns the format's name as vmctl and qemu-img spell it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// How the top image of a disk is opened. Backing images are always
/// read-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read and write, under an exclusive lock.
    ReadWrite,
    /// Read only, under a shared lock.
    ReadOnly,
}

/// One open file of a backing chain.
#[derive(Debug)]
pub struct ChainFile {
    /// The path the file was opened from, used in error messages only.
    pub path: PathBuf,
    /// The file's format.
    pub format: Format,
    /// The open file. The top image's descriptor carries its lock; bases
    /// carry shared locks.
    pub file: File,
}

/// The open files of one disk, top image first, each base after the image
/// that names it.
#[derive(Debug)]
pub struct Chain {
    /// How the top image was opened.
    pub access: Access,
    /// The files, from the top image down to the last base.
    pub files: Vec<ChainFile>,
}

/// Opens the image at `path` and every backing file below it.
///
/// `format` is the top image's format if the user gave one; otherwise the
/// qcow2 magic decides. NOTE: probing trusts the image's first bytes, so a
/// guest that writes a qcow2 header into a raw disk makes the next open
/// follow a backing name of its choosing; pass the configured format
/// whenever there is one. A backing file's format comes from the backing
/// format header extension, or from its magic when the image names none. A
/// relative backing name is resolved against the directory of the image
/// that names it.
///
/// # Errors
///
/// A missing file is [`Problem::Open`] or [`Problem::MissingBacking`];
/// a lock held by another process is [`Problem::Locked`]; a chain of more
/// than [`MAX_CHAIN_FILES`] files is [`Problem::ChainTooLong`]; a file that
/// appears twice is [`Problem::BackingLoop`]; header defects are the
/// [`Problem`] variant for the field.
pub fn open_chain(path: &Path, format: Option<Format>, access: Access) -> Result<Chain> {
    let top =
        open_image_file(path, access).map_err(|source| Error::new(path, Problem::Open(source)))?;
    let mut seen = HashSet::new();
    seen.insert(file_identity(&top, path)?);
    lock_file(&top, access).map_err(|problem| Error::new(path, problem))?;
    let format = match format {
        Some(format) => format,
        None => probe_format(&top, path)?,
    };

    let mut files = vec![ChainFile {
        path: path.to_path_buf(),
        format,
        file: top,
    }];
    while let Some(base) = open_backing(files.last().expect("chain holds the top image"))? {
        let referrer = &files.last().expect("chain holds the top image").path;
        if files.len() == MAX_CHAIN_FILES {
            return Err(Error::new(
                &files[0].path,
                Problem::ChainTooLong {
                    limit: MAX_CHAIN_FILES,
                },
            ));
        }
        if !seen.insert(file_identity(&base.file, &base.path)?) {
            return Err(Error::new(
                referrer,
                Problem::BackingLoop { backing: base.path },
            ));
        }
        lock_file(&base.file, Access::ReadOnly)
            .map_err(|problem| Error::new(&base.path, problem))?;
        files.push(base);
    }

    Ok(Chain { access, files })
}

/// Opens the backing file that `image` names, if it names one.
fn open_backing(image: &ChainFile) -> Result<Option<ChainFile>> {
    if image.format == Format::Raw {
        return Ok(None);
    }
    let file_size = file_size(&image.file, &image.path)?;
    let header = header::parse(&image.file, file_size)
        .map_err(|problem| Error::new(&image.path, problem))?;
    let Some(name) = header.backing_name else {
        return Ok(None);
    };

    let backing_path = resolve_backing_path(&image.path, &name);
    let file = open_image_file(&backing_path, Access::ReadOnly).map_err(|source| {
        Error::new(
            &image.path,
            Problem::MissingBacking {
                backing: backing_path.clone(),
                source,
            },
        )
    })?;
    let format = match header.backing_format {
        Some(format) => format,
        None => probe_format(&file, &backing_path)?,
    };

    Ok(Some(ChainFile {
        path: backing_path,
        format,
        file,
    }))
}

/// Resolves a backing file name against the directory of the image that
/// names it; an absolute name is used as it is.
pub fn resolve_backing_path(image_path: &Path, backing_name: &str) -> PathBuf {
    let backing = Path::new(backing_name);
    if backing.is_absolute() {
        return backing.to_path_buf();
    }
    match image_path.parent() {
        Some(directory) => directory.join(backing),
        None => backing.to_path_buf(),
    }
}

/// Opens an image without blocking (a FIFO would otherwise wait for a
/// writer) and accepts only regular files and block devices. std sets
/// close-on-exec, as always.
fn open_image_file(path: &Path, access: Access) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(access == Access::ReadWrite)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let file_type = file.metadata()?.file_type();
    if !file_type.is_file() && !file_type.is_block_device() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file or block device",
        ));
    }
    Ok(file)
}

/// How long a lock conflict may last before it counts as the image being
/// in use. A flock(2) lock is shared by every copy of the descriptor, so a
/// process that forks to exec a program holds the lock of any image it has
/// open until the child's exec closes the copy: a conflict that brief is
/// not another user of the image.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Takes the lock that goes with `access`, as OpenBSD's
/// O_EXLOCK|O_NONBLOCK open does for the top image, waiting at most
/// [`LOCK_GRACE`] for a conflicting lock to go away.
fn lock_file(file: &File, access: Access) -> std::result::Result<(), Problem> {
    let started = std::time::Instant::now();
    loop {
        let locked = match access {
            Access::ReadWrite => file.try_lock(),
            Access::ReadOnly => file.try_lock_shared(),
        };
        match locked {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if started.elapsed() < LOCK_GRACE => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(TryLockError::WouldBlock) => return Err(Problem::Locked),
            Err(TryLockError::Error(source)) => return Err(Problem::Lock(source)),
        }
    }
}

fn stat(file: &File, path: &Path) -> Result<std::fs::Metadata> {
    file.metadata()
        .map_err(|source| Error::new(path, Problem::Stat(source)))
}

/// Returns (device, inode), which identifies a file however it was named.
fn file_identity(file: &File, path: &Path) -> Result<(u64, u64)> {
    let metadata = stat(file, path)?;
    Ok((metadata.dev(), metadata.ino()))
}

/// Returns the size of an open image in bytes: the file's length, or the
/// device's size for a block device, whose length stat reports as 0. All
/// I/O here is positional, so moving the file offset to find the end is
/// harmless.
pub(crate) fn file_size(file: &File, path: &Path) -> Result<u64> {
    let metadata = stat(file, path)?;
    if !metadata.file_type().is_block_device() {
        return Ok(metadata.len());
    }
    let mut file = file;
    file.seek(io::SeekFrom::End(0))
        .map_err(|source| Error::new(path, Problem::Stat(source)))
}

/// Returns qcow2 if the file starts with the qcow2 magic, raw otherwise.
pub(crate) fn probe_format(file: &File, path: &Path) -> Result<Format> {
    let is_qcow2 = header::has_qcow2_magic(file).map_err(|problem| Error::new(path, problem))?;
    Ok(if is_qcow2 { Format::Qcow2 } else { Format::Raw })
}

//! Creating new raw and qcow2 image files.
//!
//! New files are created exclusively (an existing file is an error, never
//! overwritten) with mode 0600, as vmctl create does on OpenBSD. A file
//! that fails half way through is removed again.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{FormatCreateBuilder, StorageOpenOptions};

use crate::chain::Format;
use crate::error::{Error, Problem, Result};

/// Cluster size of new qcow2 images, as OpenBSD's vmctl and qemu-img use.
pub const QCOW2_CLUSTER_SIZE: usize = 64 * 1024;

/// The backing file a new qcow2 image refers to.
#[derive(Clone, Copy, Debug)]
pub struct Backing<'a> {
    /// The name stored in the header, exactly as given: a relative name is
    /// resolved against the new image's directory when the image is opened.
    pub name: &'a str,
    /// The backing file's format, stored in the backing format extension.
    pub format: Format,
}

/// Creates a sparse raw image of `size` bytes at `path`.
///
/// # Errors
///
/// [`Problem::Create`] if the file exists or cannot be created or sized.
pub fn create_raw(path: &Path, size: u64) -> Result<()> {
    let file = create_file(path)?;
    file.set_len(size)
        .map_err(|source| remove_after_failure(path, source))
}

/// Creates a qcow2 version 3 image of `size` bytes at `path`, with 64 KiB
/// clusters, 16-bit refcounts and, if given, a backing file.
///
/// # Errors
///
/// [`Problem::Create`] if the file exists or cannot be created or
/// formatted.
pub fn create_qcow2(path: &Path, size: u64, backing: Option<Backing<'_>>) -> Result<()> {
    let file = create_file(path)?;
    let options = StorageOpenOptions::new().write(true).filename(path);
    let storage = ImagoFile::from_open_file(file, options)
        .map_err(|source| remove_after_failure(path, source))?;

    let mut builder = Qcow2::<ImagoFile>::create_builder(storage)
        .size(size)
        .cluster_size(QCOW2_CLUSTER_SIZE);
    if let Some(backing) = backing {
        builder = builder.backing(backing.name.to_string(), backing.format.name().to_string());
    }
    builder
        .create()
        .map_err(|source| remove_after_failure(path, source))
}

/// Creates `path` exclusively with mode 0600.
fn create_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| Error::new(path, Problem::Create(source)))
}

/// Removes a file this module created and could not finish, and returns
/// the error that stopped it.
fn remove_after_failure(path: &Path, source: std::io::Error) -> Error {
    if let Err(error) = std::fs::remove_file(path) {
        log::warn!(
            "{}: cannot remove unfinished image: {error}",
            path.display()
        );
    }
    Error::new(path, Problem::Create(source))
}

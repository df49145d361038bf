//! Raw and qcow2 disk images with backing chains.
//!
//! A disk is a chain of up to [`MAX_CHAIN_FILES`] image files: the top
//! image, opened read-write under an exclusive lock, and the read-only
//! bases it names. Opening happens in two steps that match vmd's process
//! split:
//!
//! 1. [`open_chain`] runs in the privileged parent. It opens the top image
//!    and walks the backing chain by path, resolving relative backing names
//!    against the directory of the image that names them, and checks the
//!    length limit and loops.
//! 2. [`Disk::from_chain`] runs in the sandboxed vm process on the files
//!    handed over. It opens no path. It validates every qcow2 header and
//!    mapping table, then serves byte-offset I/O.
//!
//! [`Disk::open`] does both steps at once for tools and tests.
//!
//! qcow2 versions 2 and 3 are read and written through the imago crate's
//! qcow2 driver: zero clusters read as zeroes, zlib-compressed clusters are
//! decompressed, writes allocate clusters and copy-on-write from the
//! backing chain with exact refcounts. Encrypted images, external data
//! files, extended L2 entries, zstd compression and images with the dirty
//! or corrupt bit are rejected with an error naming the file.
//!
//! This crate does not use unsafe code and does not depend on KVM or the
//! device model.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod chain;
mod create;
mod disk;
mod error;
mod header;
mod metadata;

pub use chain::{
    Access, Chain, ChainFile, Format, MAX_CHAIN_FILES, open_chain, resolve_backing_path,
};
pub use create::{Backing, QCOW2_CLUSTER_SIZE, create_qcow2, create_raw};
pub use disk::Disk;
pub use error::{Error, ErrorKind, Feature, Problem, Result};

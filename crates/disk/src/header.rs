//! qcow2 header parsing and validation, done before the qcow2 driver sees
//! the image.
//!
//! The checks follow the field order of the qcow2 specification (QEMU's
//! docs/interop/qcow2.rst) and give each defect its own error, so a malformed
//! image fails at open with a message naming the field. This module only
//! reads; it never writes to the image.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::chain::Format;
use crate::error::{Feature, Problem};

/// The qcow2 magic, "QFI" followed by 0xfb.
pub(crate) const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Length of the version 2 header (and of the common part of version 3).
const V2_HEADER_LENGTH: u64 = 72;

/// Minimum length of the version 3 header.
const V3_HEADER_LENGTH: u64 = 104;

/// Longest backing file name the specification allows.
const MAX_BACKING_NAME_LENGTH: u32 = 1023;

/// QEMU's limit on the L1 table (32 MiB, 4 Mi entries); larger tables are
/// never written by QEMU and would only cost memory.
pub(crate) const MAX_L1_ENTRIES: u32 = 32 * 1024 * 1024 / 8;

/// QEMU's limit on the refcount table (8 MiB).
const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 * 1024 * 1024;

/// Header extension types (qcow2 spec, "Header extensions").
const EXTENSION_END: u32 = 0;
const EXTENSION_BACKING_FORMAT: u32 = 0xe279_2aca;

/// Incompatible feature bits (qcow2 spec, header bytes 72-79).
const INCOMPATIBLE_DIRTY: u64 = 1 << 0;
const INCOMPATIBLE_CORRUPT: u64 = 1 << 1;
const INCOMPATIBLE_EXTERNAL_DATA_FILE: u64 = 1 << 2;
const INCOMPATIBLE_COMPRESSION_TYPE: u64 = 1 << 3;
const INCOMPATIBLE_EXTENDED_L2: u64 = 1 << 4;

/// The validated fields of a qcow2 header that the rest of the crate uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Qcow2Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_entries: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub refcount_order: u32,
    pub backing_name: Option<String>,
    pub backing_format: Option<Format>,
}

impl Qcow2Header {
    /// Returns the cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
}

/// Returns the guest bytes one L2 table (one L1 entry) maps: the table
/// has cluster_size / 8 entries of one cluster each, so 2^(2 *
/// cluster_bits - 3) bytes, at most 2^39 since cluster_bits <= 21.
pub(crate) fn bytes_per_l2_table(cluster_bits: u32) -> u64 {
    1u64 << (2 * cluster_bits - 3)
}

/// Reads big-endian header fields from a buffer that is known to be long
/// enough.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u32_at(&self, offset: usize) -> u32 {
        let bytes = self.0[offset..offset + 4]
            .try_into()
            .expect("slice of 4 bytes converts to an array of 4");
        u32::from_be_bytes(bytes)
    }

    fn u64_at(&self, offset: usize) -> u64 {
        let bytes = self.0[offset..offset + 8]
            .try_into()
            .expect("slice of 8 bytes converts to an array of 8");
        u64::from_be_bytes(bytes)
    }
}

/// Returns whether the first bytes of `file` are the qcow2 magic.
pub(crate) fn has_qcow2_magic(file: &File) -> Result<bool, Problem> {
    let mut magic = [0u8; 4];
    let length = read_up_to(file, &mut magic, 0, "image header")?;
    Ok(length == magic.len() && magic == QCOW2_MAGIC)
}

/// Reads into `buf` at `offset` until it is full or the file ends, and
/// returns the number of bytes read. Interrupted reads are retried.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(length) => done += length,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(done)
}

/// [`read_full_at`] for metadata: an error names `what` was being read.
fn read_up_to(
    file: &File,
    buf: &mut [u8],
    offset: u64,
    what: &'static str,
) -> Result<usize, Problem> {
    read_full_at(file, buf, offset).map_err(|source| Problem::ReadMetadata {
        what,
        offset,
        source,
    })
}

/// Parses and validates the qcow2 header of `file`, whose size is
/// `file_size` bytes.
///
/// Every offset and length from the header is checked against the file
/// size before use, so a malformed header is an error and never a huge
/// allocation or a read outside the file.
pub(crate) fn parse(file: &File, file_size: u64) -> Result<Qcow2Header, Problem> {
    if file_size < V2_HEADER_LENGTH {
        return Err(Problem::HeaderTooShort {
            length: file_size,
            minimum: V2_HEADER_LENGTH,
        });
    }
    let mut buf = [0u8; V3_HEADER_LENGTH as usize + 1];
    let read = read_up_to(file, &mut buf, 0, "image header")?;
    let fields = Fields(&buf);

    if buf[..4] != QCOW2_MAGIC {
        return Err(Problem::NotQcow2);
    }
    let version = fields.u32_at(4);
    if version != 2 && version != 3 {
        return Err(Problem::UnsupportedVersion(version));
    }

    let cluster_bits = fields.u32_at(20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(Problem::InvalidClusterBits(cluster_bits));
    }
    let cluster_size = 1u64 << cluster_bits;

    let v3 = parse_v3_fields(&fields, version, read as u64, cluster_size)?;

    let crypt_method = fields.u32_at(32);
    if crypt_method != 0 {
        return Err(Problem::UnsupportedFeature(Feature::Encryption {
            method: crypt_method,
        }));
    }

    let size = fields.u64_at(24);
    let (l1_entries, l1_table_offset) = check_l1_table(&fields, size, cluster_bits, file_size)?;
    let (refcount_table_offset, refcount_table_clusters) =
        check_refcount_table(&fields, cluster_size, file_size)?;

    let backing_name = read_backing_name(file, &fields, cluster_size, file_size)?;
    // Extensions end where the backing file name starts, if it is in the
    // header cluster (as QEMU's qcow2_read_extensions bounds them).
    let backing_name_offset = fields.u64_at(8);
    let extensions_end = if backing_name_offset != 0 {
        backing_name_offset.min(cluster_size)
    } else {
        cluster_size
    };
    let backing_format = read_backing_format(file, v3.header_length, extensions_end)?;

    Ok(Qcow2Header {
        version,
        cluster_bits,
        size,
        l1_entries,
        l1_table_offset,
        refcount_table_offset,
        refcount_table_clusters,
        refcount_order: v3.refcount_order,
        backing_name,
        backing_format,
    })
}

/// Fields that version 3 adds, with their version 2 defaults.
struct V3Fields {
    refcount_order: u32,
    header_length: u64,
}

/// Validates the version 3 part of the header: its length, the feature bits
/// and refcount_order.
fn parse_v3_fields(
    fields: &Fields<'_>,
    version: u32,
    read: u64,
    cluster_size: u64,
) -> Result<V3Fields, Problem> {
    if version == 2 {
        return Ok(V3Fields {
            refcount_order: 4,
            header_length: V2_HEADER_LENGTH,
        });
    }
    if read < V3_HEADER_LENGTH {
        return Err(Problem::HeaderTooShort {
            length: read,
            minimum: V3_HEADER_LENGTH,
        });
    }

    let header_length = fields.u32_at(100);
    if u64::from(header_length) < V3_HEADER_LENGTH {
        return Err(Problem::HeaderTooShort {
            length: header_length.into(),
            minimum: V3_HEADER_LENGTH,
        });
    }
    if !header_length.is_multiple_of(8) || u64::from(header_length) > cluster_size {
        return Err(Problem::InvalidHeaderLength {
            length: header_length,
        });
    }

    // The compression type byte exists only when the header is long enough
    // to hold it (qcow2 spec, "Additional fields").
    let compression_type = if header_length > 104 && read > 104 {
        fields.0[104]
    } else {
        0
    };
    check_incompatible_features(fields.u64_at(72), compression_type)?;

    let refcount_order = fields.u32_at(96);
    if refcount_order > 6 {
        return Err(Problem::InvalidRefcountOrder(refcount_order));
    }

    Ok(V3Fields {
        refcount_order,
        header_length: header_length.into(),
    })
}

/// Rejects every incompatible feature bit this crate cannot honour.
fn check_incompatible_features(bits: u64, compression_type: u8) -> Result<(), Problem> {
    let known = INCOMPATIBLE_DIRTY
        | INCOMPATIBLE_CORRUPT
        | INCOMPATIBLE_EXTERNAL_DATA_FILE
        | INCOMPATIBLE_COMPRESSION_TYPE
        | INCOMPATIBLE_EXTENDED_L2;
    if bits & !known != 0 {
        return Err(Problem::UnsupportedFeature(Feature::UnknownIncompatible(
            bits & !known,
        )));
    }
    if bits & INCOMPATIBLE_CORRUPT != 0 {
        return Err(Problem::MarkedCorrupt);
    }
    if bits & INCOMPATIBLE_DIRTY != 0 {
        return Err(Problem::UnsupportedFeature(Feature::Dirty));
    }
    if bits & INCOMPATIBLE_EXTERNAL_DATA_FILE != 0 {
        return Err(Problem::UnsupportedFeature(Feature::ExternalDataFile));
    }
    if bits & INCOMPATIBLE_EXTENDED_L2 != 0 {
        return Err(Problem::UnsupportedFeature(Feature::ExtendedL2));
    }
    // The spec requires the compression type bit exactly when the type is
    // not zlib (0); both halves of that are checked.
    if bits & INCOMPATIBLE_COMPRESSION_TYPE != 0 || compression_type != 0 {
        return Err(Problem::UnsupportedFeature(Feature::CompressionType(
            compression_type,
        )));
    }
    Ok(())
}

/// Checks the L1 table fields against the disk size and the file, and
/// returns (entries, offset).
fn check_l1_table(
    fields: &Fields<'_>,
    size: u64,
    cluster_bits: u32,
    file_size: u64,
) -> Result<(u32, u64), Problem> {
    // Host offsets are at most 56 bits; a larger disk cannot be mapped.
    if size > 1 << 56 {
        return Err(Problem::DiskSizeTooLarge { size });
    }
    let l1_entries = fields.u32_at(36);
    if l1_entries > MAX_L1_ENTRIES {
        return Err(Problem::L1TooLarge {
            entries: l1_entries,
            maximum: MAX_L1_ENTRIES,
        });
    }

    let bytes_per_l1_entry = bytes_per_l2_table(cluster_bits);
    let needed = size.div_ceil(bytes_per_l1_entry);
    if u64::from(l1_entries) < needed {
        return Err(Problem::L1TooSmall {
            entries: l1_entries,
            needed,
        });
    }

    let offset = fields.u64_at(40);
    check_table_in_file(
        "L1 table",
        offset,
        u64::from(l1_entries) * 8,
        1 << cluster_bits,
        file_size,
    )?;
    Ok((l1_entries, offset))
}

/// Checks the refcount table fields, and returns (offset, clusters).
fn check_refcount_table(
    fields: &Fields<'_>,
    cluster_size: u64,
    file_size: u64,
) -> Result<(u64, u32), Problem> {
    let clusters = fields.u32_at(56);
    let maximum = (MAX_REFCOUNT_TABLE_BYTES / cluster_size).max(1) as u32;
    if clusters > maximum {
        return Err(Problem::RefcountTableTooLarge { clusters, maximum });
    }
    let offset = fields.u64_at(48);
    check_table_in_file(
        "refcount table",
        offset,
        u64::from(clusters) * cluster_size,
        cluster_size,
        file_size,
    )?;
    Ok((offset, clusters))
}

/// Checks that a table is cluster aligned, does not overlap the header
/// cluster and ends inside the file.
pub(crate) fn check_table_in_file(
    table: &'static str,
    offset: u64,
    length: u64,
    cluster_size: u64,
    file_size: u64,
) -> Result<(), Problem> {
    if !offset.is_multiple_of(cluster_size) || (offset == 0 && length != 0) {
        return Err(Problem::UnalignedTable { table, offset });
    }
    let beyond = offset.checked_add(length).is_none_or(|end| end > file_size);
    if beyond {
        return Err(Problem::TableBeyondEof {
            table,
            offset,
            length,
            file_size,
        });
    }
    Ok(())
}

/// Reads the backing file name, if the header names one.
fn read_backing_name(
    file: &File,
    fields: &Fields<'_>,
    cluster_size: u64,
    file_size: u64,
) -> Result<Option<String>, Problem> {
    let offset = fields.u64_at(8);
    let length = fields.u32_at(16);
    if offset == 0 {
        return Ok(None);
    }
    if length > MAX_BACKING_NAME_LENGTH {
        return Err(Problem::BackingNameTooLong { length });
    }

    // The name must lie in the header cluster, after the fixed header.
    let end = offset + u64::from(length);
    if offset < V2_HEADER_LENGTH || end > cluster_size || end > file_size {
        return Err(Problem::BackingNameOutOfBounds { offset, length });
    }

    let mut name = vec![0u8; length as usize];
    let read = read_up_to(file, &mut name, offset, "backing file name")?;
    if read != name.len() {
        return Err(Problem::BackingNameOutOfBounds { offset, length });
    }
    match String::from_utf8(name) {
        Ok(name) if !name.is_empty() && !name.contains('\0') => Ok(Some(name)),
        _ => Err(Problem::InvalidBackingName),
    }
}

/// Walks the header extensions and returns the backing format, if one is
/// given.
///
/// Extensions follow the header (at 72 for version 2, at header_length for
/// version 3) and must end before `extensions_end`.
fn read_backing_format(
    file: &File,
    header_length: u64,
    extensions_end: u64,
) -> Result<Option<Format>, Problem> {
    let mut offset = header_length;
    let mut backing_format = None;

    // Each extension takes at least 8 bytes, so this loop ends within
    // extensions_end / 8 steps.
    while offset < extensions_end {
        if offset + 8 > extensions_end {
            return Err(Problem::HeaderExtensionOutOfBounds { offset });
        }
        let mut extension_header = [0u8; 8];
        let read = read_up_to(file, &mut extension_header, offset, "header extension")?;
        if read < extension_header.len() {
            // A file that ends here has no (more) extensions; QEMU's
            // version 2 images without extensions look like this.
            return Ok(backing_format);
        }
        let fields = Fields(&extension_header);
        let extension_type = fields.u32_at(0);
        let length = u64::from(fields.u32_at(4));
        if extension_type == EXTENSION_END {
            return Ok(backing_format);
        }

        let data_offset = offset + 8;
        if data_offset + length > extensions_end {
            return Err(Problem::HeaderExtensionOutOfBounds { offset });
        }
        if extension_type == EXTENSION_BACKING_FORMAT {
            let mut name = vec![0u8; length as usize];
            read_up_to(file, &mut name, data_offset, "backing format")?;
            backing_format = Some(parse_backing_format(&name)?);
        }
        offset = data_offset + length.next_multiple_of(8);
    }
    Ok(backing_format)
}

/// Maps the backing format extension's text to a format.
fn parse_backing_format(name: &[u8]) -> Result<Format, Problem> {
    match name {
        b"qcow2" => Ok(Format::Qcow2),
        // QEMU writes "file" for raw files in some versions.
        b"raw" | b"file" => Ok(Format::Raw),
        other => Err(Problem::UnsupportedBackingFormat(
            String::from_utf8_lossy(other).into_owned(),
        )),
    }
}

//! Open-time check of qcow2 mapping tables: every L2 table, data cluster,
//! compressed cluster and refcount block must lie inside the file.
//!
//! The qcow2 driver reads past the end of the file as zeroes and would
//! write wherever an entry points, so a table entry outside the file is
//! rejected here, once, before any guest I/O. Only this process writes the
//! top image while it holds it locked, so entries checked at open stay
//! valid. This module only reads.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::error::Problem;
use crate::header::{self, Qcow2Header, check_table_in_file};

/// Bits 9-55 of L1, L2 and refcount table entries: a cluster offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// L2 entry flag: the cluster is compressed (qcow2 spec, "Cluster mapping").
const L2_COMPRESSED: u64 = 1 << 62;

/// L2 entry flag: the refcount is exactly one.
const L2_COPIED: u64 = 1 << 63;

/// Reserved bits of a standard L2 entry: 1-8 and 56-61.
const L2_STANDARD_RESERVED: u64 = 0x3f00_0000_0000_01fe;

/// Checks every table reachable from the L1 table and the refcount table.
///
/// Reads each allocated L2 table once, so the cost is one cluster read per
/// 2^(2 * cluster_bits - 3) bytes of allocated disk (one 64 KiB read per
/// 512 MiB with the default cluster size).
pub(crate) fn check_tables(
    file: &File,
    header: &Qcow2Header,
    file_size: u64,
) -> Result<(), Problem> {
    check_refcount_blocks(file, header, file_size)?;

    let l1_table = read_table(
        file,
        header.l1_table_offset,
        u64::from(header.l1_entries) * 8,
        "L1 table",
    )?;
    let bytes_per_l2_table = header::bytes_per_l2_table(header.cluster_bits);
    for (l1_index, l1_entry) in l1_table.iter().enumerate() {
        let l2_offset = l1_entry & OFFSET_MASK;
        if l2_offset == 0 {
            continue;
        }
        check_table_in_file(
            "L2 table",
            l2_offset,
            header.cluster_size(),
            header.cluster_size(),
            file_size,
        )?;
        let l2_table = read_table(file, l2_offset, header.cluster_size(), "L2 table")?;
        let first_guest_offset = l1_index as u64 * bytes_per_l2_table;
        check_l2_table(&l2_table, first_guest_offset, header, file_size)?;
    }
    Ok(())
}

/// Checks that each refcount block the refcount table names is inside the
/// file, because the allocator would otherwise see its clusters as free.
fn check_refcount_blocks(file: &File, header: &Qcow2Header, file_size: u64) -> Result<(), Problem> {
    let refcount_table = read_table(
        file,
        header.refcount_table_offset,
        u64::from(header.refcount_table_clusters) * header.cluster_size(),
        "refcount table",
    )?;
    for entry in refcount_table {
        let offset = entry & OFFSET_MASK;
        if offset == 0 {
            continue;
        }
        check_table_in_file(
            "refcount block",
            offset,
            header.cluster_size(),
            header.cluster_size(),
            file_size,
        )?;
    }
    Ok(())
}

/// Checks the entries of one L2 table that maps guest bytes from
/// `first_guest_offset` on.
fn check_l2_table(
    l2_table: &[u64],
    first_guest_offset: u64,
    header: &Qcow2Header,
    file_size: u64,
) -> Result<(), Problem> {
    for (l2_index, &entry) in l2_table.iter().enumerate() {
        let guest_offset = first_guest_offset + ((l2_index as u64) << header.cluster_bits);
        if entry & L2_COMPRESSED != 0 {
            check_compressed_entry(entry, guest_offset, header, file_size)?;
            continue;
        }
        if entry & L2_STANDARD_RESERVED != 0 {
            return Err(Problem::L2EntryReservedBits { guest_offset });
        }
        let host_offset = entry & OFFSET_MASK;
        if host_offset == 0 {
            continue;
        }
        // A data cluster may end past the end of the file (the tail reads as
        // zeroes), but it must start inside it, after the header cluster.
        let unaligned = !host_offset.is_multiple_of(header.cluster_size());
        if unaligned || host_offset < header.cluster_size() || host_offset >= file_size {
            return Err(Problem::L2EntryOutsideFile {
                guest_offset,
                host_offset,
            });
        }
    }
    Ok(())
}

/// Checks a compressed cluster descriptor (qcow2 spec, "Compressed
/// Clusters Descriptor"): its data must start after the header cluster and
/// inside the file.
fn check_compressed_entry(
    entry: u64,
    guest_offset: u64,
    header: &Qcow2Header,
    file_size: u64,
) -> Result<(), Problem> {
    if entry & L2_COPIED != 0 {
        return Err(Problem::L2EntryReservedBits { guest_offset });
    }
    // The offset takes bits 0 to x-1 with x = 62 - (cluster_bits - 8); the
    // count of extra 512-byte sectors takes bits x to 61.
    let offset_bits = 62 - (header.cluster_bits - 8);
    let host_offset = entry & ((1u64 << offset_bits) - 1);
    let extra_sectors = (entry & !(L2_COMPRESSED | L2_COPIED)) >> offset_bits;
    let length = (extra_sectors + 1) * 512 - (host_offset % 512);

    // The last sector may run past the end of the file, as QEMU does not pad
    // it, but never past the cluster that holds the end of the file.
    let limit = file_size.next_multiple_of(header.cluster_size());
    let outside = host_offset < header.cluster_size()
        || host_offset >= file_size
        || host_offset + length > limit
        || host_offset > 1 << 56;
    if outside {
        return Err(Problem::InvalidCompressedCluster {
            guest_offset,
            host_offset,
            length,
        });
    }
    Ok(())
}

/// Reads a table of big-endian 64-bit entries whose bounds were checked
/// against the file size.
fn read_table(
    file: &File,
    offset: u64,
    length: u64,
    what: &'static str,
) -> Result<Vec<u64>, Problem> {
    // The header checks bound every table length to 32 MiB.
    let mut bytes = vec![0u8; length as usize];
    file.read_exact_at(&mut bytes, offset)
        .map_err(|source| Problem::ReadMetadata {
            what,
            offset,
            source,
        })?;
    let entries = bytes
        .chunks_exact(8)
        .map(|chunk| {
            u64::from_be_bytes(chunk.try_into().expect("chunks_exact yields 8-byte chunks"))
        })
        .collect();
    Ok(entries)
}

//! Malformed qcow2 images: each case starts from a valid image written by
//! this crate, changes one header field or table entry, and expects the
//! error for exactly that defect. Opening must never panic or hang.
//!
//! With DISK_CORPUS_DIR set, each generated image is also copied there (the
//! fuzzer's seed corpus is made this way).

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::ScratchDir;
use disk::{Access, Backing, Disk, ErrorKind, Feature, Format, Problem, create_qcow2};

const MIB: u64 = 1024 * 1024;
const CLUSTER: u64 = 65536;

/// qcow2 header field offsets (qcow2 spec, "Header").
mod field {
    pub const VERSION: u64 = 4;
    pub const BACKING_FILE_OFFSET: u64 = 8;
    pub const BACKING_FILE_SIZE: u64 = 16;
    pub const CLUSTER_BITS: u64 = 20;
    pub const CRYPT_METHOD: u64 = 32;
    pub const L1_SIZE: u64 = 36;
    pub const L1_TABLE_OFFSET: u64 = 40;
    pub const REFCOUNT_TABLE_OFFSET: u64 = 48;
    pub const INCOMPATIBLE_FEATURES: u64 = 72;
    pub const REFCOUNT_ORDER: u64 = 96;
    pub const HEADER_LENGTH: u64 = 100;
}

fn read_u64(path: &Path, offset: u64) -> u64 {
    let mut bytes = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut bytes, offset)
        .unwrap();
    u64::from_be_bytes(bytes)
}

fn write_bytes(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

fn write_u32(path: &Path, offset: u64, value: u32) {
    write_bytes(path, offset, &value.to_be_bytes());
}

fn write_u64(path: &Path, offset: u64, value: u64) {
    write_bytes(path, offset, &value.to_be_bytes());
}

/// Creates a valid 4 MiB image with one data cluster at guest offset 0
/// (so it has an L2 table), and returns its path.
fn valid_image(scratch: &ScratchDir, name: &str) -> PathBuf {
    let path = scratch.join(name);
    create_qcow2(&path, 4 * MIB, None).unwrap();
    let disk = Disk::open(&path, None, Access::ReadWrite).unwrap();
    disk.write_at(&[0xab; 4096], 0).unwrap();
    drop(disk);
    path
}

/// Returns the file offset of the first L2 table's entry `index`.
fn l2_entry_offset(path: &Path, index: u64) -> u64 {
    let l1_offset = read_u64(path, field::L1_TABLE_OFFSET);
    let l2_offset = read_u64(path, l1_offset) & 0x00ff_ffff_ffff_fe00;
    assert_ne!(l2_offset, 0, "the valid image has an L2 table");
    l2_offset + index * 8
}

/// Opens `path` and returns the error, copying the image to the corpus
/// directory if one is set.
fn open_error(path: &Path) -> disk::Error {
    if let Some(directory) = std::env::var_os("DISK_CORPUS_DIR") {
        let name = path.file_name().unwrap();
        std::fs::copy(path, Path::new(&directory).join(name)).unwrap();
    }
    match Disk::open(path, Some(Format::Qcow2), Access::ReadOnly) {
        Ok(disk) => panic!("{}: opened although malformed: {disk:?}", path.display()),
        Err(error) => {
            assert_eq!(error.path(), path, "error names the image: {error}");
            error
        }
    }
}

#[test]
fn valid_image_opens() {
    let scratch = ScratchDir::new("valid");
    let path = valid_image(&scratch, "valid.qcow2");
    let disk = Disk::open(&path, None, Access::ReadOnly).unwrap();
    let mut buf = [0u8; 4096];
    disk.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [0xab; 4096]);
}

#[test]
fn header_too_short_is_rejected() {
    let scratch = ScratchDir::new("short");
    let path = valid_image(&scratch, "header-too-short.qcow2");
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(50)
        .unwrap();

    let error = open_error(&path);

    assert!(
        matches!(
            error.problem(),
            Problem::HeaderTooShort {
                length: 50,
                minimum: 72
            }
        ),
        "{error}"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidFormat);
}

#[test]
fn header_length_below_v3_minimum_is_rejected() {
    let scratch = ScratchDir::new("header-length");
    let path = valid_image(&scratch, "header-length-96.qcow2");
    write_u32(&path, field::HEADER_LENGTH, 96);

    let error = open_error(&path);

    assert!(
        matches!(
            error.problem(),
            Problem::HeaderTooShort {
                length: 96,
                minimum: 104
            }
        ),
        "{error}"
    );
}

#[test]
fn unknown_version_is_rejected() {
    let scratch = ScratchDir::new("version");
    let path = valid_image(&scratch, "version-4.qcow2");
    write_u32(&path, field::VERSION, 4);

    let error = open_error(&path);

    assert!(
        matches!(error.problem(), Problem::UnsupportedVersion(4)),
        "{error}"
    );
    assert_eq!(error.kind(), ErrorKind::UnsupportedFeature);
}

#[test]
fn bad_cluster_bits_are_rejected() {
    for cluster_bits in [0u32, 8, 22, 63] {
        let scratch = ScratchDir::new("cluster-bits");
        let path = valid_image(&scratch, &format!("cluster-bits-{cluster_bits}.qcow2"));
        write_u32(&path, field::CLUSTER_BITS, cluster_bits);

        let error = open_error(&path);

        assert!(
            matches!(error.problem(), Problem::InvalidClusterBits(bits) if *bits == cluster_bits),
            "cluster_bits {cluster_bits}: {error}"
        );
    }
}

#[test]
fn refcount_order_out_of_range_is_rejected() {
    let scratch = ScratchDir::new("refcount-order");
    let path = valid_image(&scratch, "refcount-order-7.qcow2");
    write_u32(&path, field::REFCOUNT_ORDER, 7);

    let error = open_error(&path);

    assert!(
        matches!(error.problem(), Problem::InvalidRefcountOrder(7)),
        "{error}"
    );
}

#[test]
fn crypt_method_is_rejected() {
    for method in [1u32, 2] {
        let scratch = ScratchDir::new("crypt");
        let path = valid_image(&scratch, &format!("crypt-method-{method}.qcow2"));
        write_u32(&path, field::CRYPT_METHOD, method);

        let error = open_error(&path);

        assert!(
            matches!(error.problem(), Problem::UnsupportedFeature(Feature::Encryption { method: m }) if *m == method),
            "crypt_method {method}: {error}"
        );
        assert_eq!(error.kind(), ErrorKind::UnsupportedFeature);
    }
}

#[test]
fn incompatible_feature_bits_are_rejected() {
    type Case = (&'static str, u64, fn(&Problem) -> bool);
    let cases: [Case; 6] = [
        ("unknown-bit-20", 1 << 20, |p| {
            matches!(
                p,
                Problem::UnsupportedFeature(Feature::UnknownIncompatible(0x10_0000))
            )
        }),
        ("dirty", 1 << 0, |p| {
            matches!(p, Problem::UnsupportedFeature(Feature::Dirty))
        }),
        ("corrupt", 1 << 1, |p| matches!(p, Problem::MarkedCorrupt)),
        ("external-data-file", 1 << 2, |p| {
            matches!(p, Problem::UnsupportedFeature(Feature::ExternalDataFile))
        }),
        ("compression-type", 1 << 3, |p| {
            matches!(p, Problem::UnsupportedFeature(Feature::CompressionType(0)))
        }),
        ("extended-l2", 1 << 4, |p| {
            matches!(p, Problem::UnsupportedFeature(Feature::ExtendedL2))
        }),
    ];
    for (name, bits, expected) in cases {
        let scratch = ScratchDir::new("features");
        let path = valid_image(&scratch, &format!("incompatible-{name}.qcow2"));
        write_u64(&path, field::INCOMPATIBLE_FEATURES, bits);

        let error = open_error(&path);

        assert!(expected(error.problem()), "{name}: {error}");
    }
}

#[test]
fn zstd_compression_type_is_rejected() {
    let scratch = ScratchDir::new("zstd");
    let path = scratch.join("compression-zstd.qcow2");
    common::qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compression_type=zstd",
        common::text(&path),
        "4M",
    ]);

    let error = open_error(&path);

    assert!(
        matches!(
            error.problem(),
            Problem::UnsupportedFeature(Feature::CompressionType(1))
        ),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "disk {}: unsupported qcow2 feature: zstd compression",
            path.display()
        )
    );
}

#[test]
fn l1_table_beyond_eof_is_rejected() {
    let scratch = ScratchDir::new("l1-eof");
    let path = valid_image(&scratch, "l1-beyond-eof.qcow2");
    let file_size = std::fs::metadata(&path).unwrap().len();
    let offset = file_size.next_multiple_of(CLUSTER);
    write_u64(&path, field::L1_TABLE_OFFSET, offset);
    let l1_bytes = u64::from((read_u64(&path, field::L1_SIZE - 4) & 0xffff_ffff) as u32) * 8;

    let error = open_error(&path);

    assert!(
        matches!(error.problem(), Problem::TableBeyondEof { table: "L1 table", offset: o, length: l, file_size: f } if *o == offset && *l == l1_bytes && *f == file_size),
        "{error}"
    );
}

#[test]
fn unaligned_l1_table_is_rejected() {
    let scratch = ScratchDir::new("l1-unaligned");
    let path = valid_image(&scratch, "l1-unaligned.qcow2");
    let offset = read_u64(&path, field::L1_TABLE_OFFSET) + 8;
    write_u64(&path, field::L1_TABLE_OFFSET, offset);

    let error = open_error(&path);

    assert!(
        matches!(error.problem(), Problem::UnalignedTable { table: "L1 table", offset: o } if *o == offset),
        "{error}"
    );
}

#[test]
fn huge_l1_size_is_rejected() {
    let scratch = ScratchDir::new("l1-huge");
    let path = valid_image(&scratch, "l1-size-huge.qcow2");
    write_u32(&path, field::L1_SIZE, 0x1000_0000);

    let error = open_error(&path);

    assert!(
        matches!(
            error.problem(),
            Problem::L1TooLarge {
                entries: 0x1000_0000,
                maximum: 4_194_304
            }
        ),
        "{error}"
    );
}

#[test]
fn l1_size_too_small_for_disk_is_rejected() {
    let scratch = ScratchDir::new("l1-small");
    let path = valid_image(&scratch, "l1-size-zero.qcow2");
    write_u32(&path, field::L1_SIZE, 0);

    let error = open_error(&path);

    assert!(
        matches!(
            error.problem(),
            Problem::L1TooSmall {
                entries: 0,
                needed: 1
            }
        ),
        "{error}"
    );
}

#[test]
fn refcount_table_beyond_eof_is_rejected() {
    let scratch = ScratchDir::new("reftable-eof");
    let path = valid_image(&scratch, "refcount-table-beyond-eof.qcow2");
    write_u64(&path, field::REFCOUNT_TABLE_OFFSET, 1 << 40);

    let error = open_error(&path);

    assert!(
        matches!(
            error.problem(),
            Problem::TableBeyondEof {
                table: "refcount table",
                offset: 0x100_0000_0000,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn backing_name_out_of_bounds_is_rejected() {
    let scratch = ScratchDir::new("backing-bounds");
    let path = valid_image(&scratch, "backing-name-out-of-bounds.qcow2");
    write_u64(&path, field::BACKING_FILE_OFFSET, CLUSTER - 10);
    write_u32(&path, field::BACKING_FILE_SIZE, 100);

    let error = open_error(&path);

    assert!(
        matches!(
            error.problem(),
            Problem::BackingNameOutOfBounds {
                offset: 65526,
                length: 100
            }
        ),
        "{error}"
    );
}

#[test]
fn backing_name_too_long_is_rejected() {
    let scratch = ScratchDir::new("backing-long");
    let path = valid_image(&scratch, "backing-name-too-long.qcow2");
    write_u64(&path, field::BACKING_FILE_OFFSET, 4096);
    write_u32(&path, field::BACKING_FILE_SIZE, 4000);

    let error = open_error(&path);

    assert!(
        matches!(
            error.problem(),
            Problem::BackingNameTooLong { length: 4000 }
        ),
        "{error}"
    );
}

#[test]
fn self_referencing_backing_name_is_a_loop() {
    let scratch = ScratchDir::new("backing-self");
    let path = scratch.join("self.qcow2");
    // "base.qcow2" and "self.qcow2" have the same length, so the name can
    // be replaced in place.
    create_qcow2(
        &path,
        4 * MIB,
        Some(Backing {
            name: "base.qcow2",
            format: Format::Qcow2,
        }),
    )
    .unwrap();
    let name_offset = read_u64(&path, field::BACKING_FILE_OFFSET);
    write_bytes(&path, name_offset, b"self.qcow2");

    let error = open_error(&path);

    assert!(
        matches!(error.problem(), Problem::BackingLoop { backing } if *backing == path),
        "{error}"
    );
}

#[test]
fn l2_entry_outside_file_is_rejected() {
    let scratch = ScratchDir::new("l2-outside");
    let path = valid_image(&scratch, "l2-entry-outside-file.qcow2");
    // Guest cluster 3 points far past the end of the file (COPIED set).
    write_u64(&path, l2_entry_offset(&path, 3), (1 << 63) | 0x7fff_0000);

    let error = open_error(&path);

    assert!(
        matches!(
            error.problem(),
            Problem::L2EntryOutsideFile {
                guest_offset: 0x30000,
                host_offset: 0x7fff_0000
            }
        ),
        "{error}"
    );
}

#[test]
fn unaligned_l2_entry_is_rejected() {
    let scratch = ScratchDir::new("l2-unaligned");
    let path = valid_image(&scratch, "l2-entry-unaligned.qcow2");
    let data_cluster = read_u64(&path, l2_entry_offset(&path, 0)) & 0x00ff_ffff_ffff_fe00;
    write_u64(
        &path,
        l2_entry_offset(&path, 1),
        (1 << 63) | (data_cluster + 512),
    );

    let error = open_error(&path);

    assert!(
        matches!(error.problem(), Problem::L2EntryOutsideFile { guest_offset: 0x10000, host_offset } if *host_offset == data_cluster + 512),
        "{error}"
    );
}

#[test]
fn l2_entry_reserved_bits_are_rejected() {
    let scratch = ScratchDir::new("l2-reserved");
    let path = valid_image(&scratch, "l2-entry-reserved-bits.qcow2");
    let entry_offset = l2_entry_offset(&path, 0);
    let entry = read_u64(&path, entry_offset);
    write_u64(&path, entry_offset, entry | 0x2);

    let error = open_error(&path);

    assert!(
        matches!(
            error.problem(),
            Problem::L2EntryReservedBits { guest_offset: 0 }
        ),
        "{error}"
    );
}

#[test]
fn l2_table_beyond_eof_is_rejected() {
    let scratch = ScratchDir::new("l2-table-eof");
    let path = valid_image(&scratch, "l2-table-beyond-eof.qcow2");
    let l1_offset = read_u64(&path, field::L1_TABLE_OFFSET);
    write_u64(&path, l1_offset, (1 << 63) | 0x100_0000_0000);

    let error = open_error(&path);

    assert!(
        matches!(
            error.problem(),
            Problem::TableBeyondEof {
                table: "L2 table",
                offset: 0x100_0000_0000,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn impossible_compressed_descriptor_is_rejected() {
    let scratch = ScratchDir::new("compressed");
    let path = valid_image(&scratch, "compressed-beyond-eof.qcow2");
    // 64 KiB clusters: the offset takes bits 0-53, the extra sector count
    // bits 54-61. Data "at" 1 TiB with 3 extra sectors.
    let descriptor = (1u64 << 62) | (3 << 54) | 0x100_0000_0000;
    write_u64(&path, l2_entry_offset(&path, 2), descriptor);

    let error = open_error(&path);

    assert!(
        matches!(
            error.problem(),
            Problem::InvalidCompressedCluster {
                guest_offset: 0x20000,
                host_offset: 0x100_0000_0000,
                length: 2048
            }
        ),
        "{error}"
    );
}

#[test]
fn compressed_descriptor_in_header_cluster_is_rejected() {
    let scratch = ScratchDir::new("compressed-header");
    let path = valid_image(&scratch, "compressed-in-header.qcow2");
    write_u64(&path, l2_entry_offset(&path, 2), (1u64 << 62) | 100);

    let error = open_error(&path);

    assert!(
        matches!(
            error.problem(),
            Problem::InvalidCompressedCluster {
                guest_offset: 0x20000,
                host_offset: 100,
                length: 412
            }
        ),
        "{error}"
    );
}

#[test]
fn plain_file_opened_as_qcow2_is_rejected() {
    let scratch = ScratchDir::new("not-qcow2");
    let path = scratch.join("plain.img");
    std::fs::write(&path, vec![0u8; 4096]).unwrap();

    let error = open_error(&path);

    assert!(matches!(error.problem(), Problem::NotQcow2), "{error}");
}

//! Backing chain rules: the four-file limit, loops, missing bases, locks,
//! and building a disk from already-open files.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};

use common::ScratchDir;
use disk::{
    Access, Backing, Chain, ChainFile, Disk, ErrorKind, Format, MAX_CHAIN_FILES, Problem,
    create_qcow2, open_chain,
};

const MIB: u64 = 1024 * 1024;

/// Creates `names[0]` <- `names[1]` <- ... in `scratch`, each naming the
/// previous one by a relative name, and returns the last (top) path.
fn build_chain(scratch: &ScratchDir, names: &[&str]) -> PathBuf {
    create_qcow2(&scratch.join(names[0]), 4 * MIB, None).unwrap();
    for pair in names.windows(2) {
        let backing = Backing {
            name: pair[0],
            format: Format::Qcow2,
        };
        create_qcow2(&scratch.join(pair[1]), 4 * MIB, Some(backing)).unwrap();
    }
    scratch.join(names[names.len() - 1])
}

#[test]
fn chain_of_four_files_opens() {
    let scratch = ScratchDir::new("chain-four");
    let top = build_chain(&scratch, &["a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2"]);

    let chain = open_chain(&top, None, Access::ReadWrite).unwrap();

    assert_eq!(chain.files.len(), MAX_CHAIN_FILES);
    assert_eq!(chain.files[3].path, scratch.join("a.qcow2"));
    let disk = Disk::from_chain(chain).unwrap();
    assert_eq!(disk.size(), 4 * MIB);
}

#[test]
fn chain_of_five_files_is_rejected() {
    let scratch = ScratchDir::new("chain-five");
    let top = build_chain(
        &scratch,
        &["a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2", "e.qcow2"],
    );

    let error = open_chain(&top, None, Access::ReadWrite).unwrap_err();

    assert!(
        matches!(error.problem(), Problem::ChainTooLong { limit: 4 }),
        "{error}"
    );
    assert_eq!(error.path(), top);
    assert_eq!(
        error.to_string(),
        format!(
            "disk {}: backing chain is longer than 4 files",
            top.display()
        )
    );
}

#[test]
fn two_image_loop_is_rejected() {
    let scratch = ScratchDir::new("chain-loop");
    // a names b, b names a: write b first with a placeholder of the same
    // length, then a, then point b at a.
    create_qcow2(
        &scratch.join("b.qcow2"),
        MIB,
        Some(Backing {
            name: "x.qcow2",
            format: Format::Qcow2,
        }),
    )
    .unwrap();
    create_qcow2(
        &scratch.join("a.qcow2"),
        MIB,
        Some(Backing {
            name: "b.qcow2",
            format: Format::Qcow2,
        }),
    )
    .unwrap();
    replace_backing_name(&scratch.join("b.qcow2"), b"a.qcow2");

    let error = open_chain(&scratch.join("a.qcow2"), None, Access::ReadWrite).unwrap_err();

    assert!(
        matches!(error.problem(), Problem::BackingLoop { backing } if *backing == scratch.join("a.qcow2")),
        "{error}"
    );
    assert_eq!(error.path(), scratch.join("b.qcow2"));
}

/// Overwrites the backing file name in place (same length).
fn replace_backing_name(path: &Path, name: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut offset = [0u8; 8];
    file.read_exact_at(&mut offset, 8).unwrap();
    file.write_all_at(name, u64::from_be_bytes(offset)).unwrap();
}

#[test]
fn missing_base_names_the_base() {
    let scratch = ScratchDir::new("chain-missing");
    let top = scratch.join("top.qcow2");
    create_qcow2(
        &top,
        MIB,
        Some(Backing {
            name: "gone.qcow2",
            format: Format::Qcow2,
        }),
    )
    .unwrap();

    let error = open_chain(&top, None, Access::ReadWrite).unwrap_err();

    assert!(
        matches!(error.problem(), Problem::MissingBacking { backing, .. } if *backing == scratch.join("gone.qcow2")),
        "{error}"
    );
    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert_eq!(
        error.to_string(),
        format!(
            "disk {}: missing backing image {}",
            top.display(),
            scratch.join("gone.qcow2").display()
        )
    );
}

#[test]
fn missing_top_image_is_not_found() {
    let scratch = ScratchDir::new("chain-no-top");

    let error = open_chain(&scratch.join("none.qcow2"), None, Access::ReadOnly).unwrap_err();

    assert!(matches!(error.problem(), Problem::Open(_)), "{error}");
    assert_eq!(error.kind(), ErrorKind::NotFound);
}

#[test]
fn second_writer_is_locked_out() {
    let scratch = ScratchDir::new("chain-lock");
    let top = build_chain(&scratch, &["base.qcow2", "top.qcow2"]);
    let _first = open_chain(&top, None, Access::ReadWrite).unwrap();

    let second = open_chain(&top, None, Access::ReadWrite).unwrap_err();
    let reader = open_chain(&top, None, Access::ReadOnly).unwrap_err();
    let base_writer = open_chain(&scratch.join("base.qcow2"), None, Access::ReadWrite).unwrap_err();

    assert!(matches!(second.problem(), Problem::Locked), "{second}");
    assert!(matches!(reader.problem(), Problem::Locked), "{reader}");
    // The base is shared-locked by the first chain, so it cannot be written.
    assert!(
        matches!(base_writer.problem(), Problem::Locked),
        "{base_writer}"
    );
}

#[test]
fn two_readers_share_a_base() {
    let scratch = ScratchDir::new("chain-shared");
    build_chain(&scratch, &["base.qcow2", "one.qcow2"]);
    create_qcow2(
        &scratch.join("two.qcow2"),
        4 * MIB,
        Some(Backing {
            name: "base.qcow2",
            format: Format::Qcow2,
        }),
    )
    .unwrap();

    let _one = open_chain(&scratch.join("one.qcow2"), None, Access::ReadWrite).unwrap();
    let two = open_chain(&scratch.join("two.qcow2"), None, Access::ReadWrite);

    assert!(two.is_ok(), "{:?}", two.err());
}

#[test]
fn disk_builds_from_open_files_without_paths() {
    let scratch = ScratchDir::new("chain-fds");
    let top = build_chain(&scratch, &["base.qcow2", "top.qcow2"]);
    {
        let base = Disk::open(&scratch.join("base.qcow2"), None, Access::ReadWrite).unwrap();
        base.write_at(&[7; 512], 4096).unwrap();
    }
    let chain = open_chain(&top, None, Access::ReadWrite).unwrap();

    // Hand the files over under paths that do not exist, as a process
    // without filesystem access would receive them.
    let files = chain
        .files
        .into_iter()
        .enumerate()
        .map(|(index, file)| ChainFile {
            path: PathBuf::from(format!("/nonexistent/{index}")),
            ..file
        })
        .collect();
    let disk = Disk::from_chain(Chain {
        access: Access::ReadWrite,
        files,
    })
    .unwrap();

    let mut buf = [0u8; 512];
    disk.read_at(&mut buf, 4096).unwrap();
    assert_eq!(buf, [7; 512]);
    disk.write_at(&[9; 512], 0).unwrap();
    disk.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [9; 512]);
}

#[test]
fn chain_missing_its_base_file_is_a_mismatch() {
    let scratch = ScratchDir::new("chain-mismatch");
    let top = build_chain(&scratch, &["base.qcow2", "top.qcow2"]);
    let file = File::options().read(true).write(true).open(&top).unwrap();
    let files = vec![ChainFile {
        path: top.clone(),
        format: Format::Qcow2,
        file,
    }];

    let error = Disk::from_chain(Chain {
        access: Access::ReadWrite,
        files,
    })
    .unwrap_err();

    assert!(
        matches!(
            error.problem(),
            Problem::ChainMismatch {
                detail: "the header names a backing file but none was given"
            }
        ),
        "{error}"
    );
}

#[test]
fn read_only_disk_rejects_writes() {
    let scratch = ScratchDir::new("read-only");
    let top = build_chain(&scratch, &["base.qcow2", "top.qcow2"]);
    let disk = Disk::open(&top, None, Access::ReadOnly).unwrap();

    let error = disk.write_at(&[1; 512], 0).unwrap_err();

    assert!(matches!(error.problem(), Problem::ReadOnly), "{error}");
    assert!(disk.is_read_only());
}

#[test]
fn request_past_end_is_out_of_range() {
    let scratch = ScratchDir::new("range");
    let path = scratch.join("disk.raw");
    disk::create_raw(&path, MIB).unwrap();
    let disk = Disk::open(&path, None, Access::ReadWrite).unwrap();
    let mut buf = [0u8; 512];

    let error = disk.read_at(&mut buf, MIB - 256).unwrap_err();
    let overflow = disk.write_zeroes(u64::MAX, 2).unwrap_err();

    assert!(
        matches!(error.problem(), Problem::OutOfRange { offset, length: 512, size } if *offset == MIB - 256 && *size == MIB),
        "{error}"
    );
    assert!(
        matches!(overflow.problem(), Problem::OutOfRange { .. }),
        "{overflow}"
    );
}

#[test]
fn raw_disk_reads_writes_and_discards() {
    let scratch = ScratchDir::new("raw-io");
    let path = scratch.join("disk.raw");
    disk::create_raw(&path, 4 * MIB).unwrap();
    let disk = Disk::open(&path, None, Access::ReadWrite).unwrap();
    assert_eq!(disk.format(), Format::Raw);

    disk.write_at(&[5; 8192], 4096).unwrap();
    disk.discard(4096, 4096).unwrap();
    disk.write_zeroes(10_000, 100).unwrap();
    disk.flush().unwrap();

    let mut buf = vec![0u8; 8192];
    disk.read_at(&mut buf, 4096).unwrap();
    let mut expected = vec![0u8; 4096];
    expected.extend_from_slice(&[5; 4096]);
    expected[10_000 - 4096..10_100 - 4096].fill(0);
    assert_eq!(buf, expected);
}

//! Zero-copy I/O between a disk and guest memory slices.

mod common;

use common::ScratchDir;
use disk::{Access, Disk, create_qcow2, create_raw};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const MIB: u64 = 1024 * 1024;

fn round_trip(disk: &Disk) {
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20000)]).unwrap();
    memory
        .write_slice(&[0x5e; 0x3000], GuestAddress(0x1000))
        .unwrap();
    let first = memory.get_slice(GuestAddress(0x1000), 0x1000).unwrap();
    let second = memory.get_slice(GuestAddress(0x2000), 0x2000).unwrap();

    disk.write_volatile(&[first, second], 70_000).unwrap();
    let target = memory.get_slice(GuestAddress(0x10000), 0x3000).unwrap();
    disk.read_volatile(&[target], 70_000).unwrap();

    let mut read_back = [0u8; 0x3000];
    memory
        .read_slice(&mut read_back, GuestAddress(0x10000))
        .unwrap();
    assert_eq!(read_back, [0x5e; 0x3000]);
    let mut plain = [0u8; 0x3000];
    disk.read_at(&mut plain, 70_000).unwrap();
    assert_eq!(plain, [0x5e; 0x3000]);
}

#[test]
fn qcow2_volatile_round_trip() {
    let scratch = ScratchDir::new("volatile-qcow2");
    let path = scratch.join("disk.qcow2");
    create_qcow2(&path, 4 * MIB, None).unwrap();

    round_trip(&Disk::open(&path, None, Access::ReadWrite).unwrap());
}

#[test]
fn raw_volatile_round_trip() {
    let scratch = ScratchDir::new("volatile-raw");
    let path = scratch.join("disk.raw");
    create_raw(&path, 4 * MIB).unwrap();

    round_trip(&Disk::open(&path, None, Access::ReadWrite).unwrap());
}

#[test]
fn volatile_read_past_end_is_rejected() {
    let scratch = ScratchDir::new("volatile-range");
    let path = scratch.join("disk.raw");
    create_raw(&path, MIB).unwrap();
    let disk = Disk::open(&path, None, Access::ReadOnly).unwrap();
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
    let slice = memory.get_slice(GuestAddress(0), 0x2000).unwrap();

    let error = disk.read_volatile(&[slice], MIB - 0x1000).unwrap_err();

    assert!(
        matches!(
            error.problem(),
            disk::Problem::OutOfRange { length: 0x2000, .. }
        ),
        "{error}"
    );
}

//! Images on block devices: a loop device over a raw file and over a qcow2
//! file must give the image's size, not the 0 that stat reports for a
//! device node.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::ScratchDir;
use disk::{Access, Disk, Format, create_qcow2};

const MIB: u64 = 1024 * 1024;

/// A loop device over a file, detached on drop.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(file: &Path) -> LoopDevice {
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .expect("losetup runs (util-linux)");
        assert!(
            output.status.success(),
            "losetup failed (these tests need root): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let name = String::from_utf8(output.stdout).unwrap();
        LoopDevice(PathBuf::from(name.trim()))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn raw_image_on_block_device_has_device_size() {
    let scratch = ScratchDir::new("blockdev-raw");
    let image = scratch.join("raw.img");
    let mut bytes = vec![0u8; 8 * MIB as usize];
    bytes[5 * MIB as usize..5 * MIB as usize + 5].copy_from_slice(b"hello");
    std::fs::write(&image, &bytes).unwrap();
    let device = LoopDevice::attach(&image);

    let disk = Disk::open(&device.0, Some(Format::Raw), Access::ReadOnly).unwrap();

    assert_eq!(disk.size(), 8 * MIB);
    let mut buf = [0u8; 5];
    disk.read_at(&mut buf, 5 * MIB).unwrap();
    assert_eq!(&buf, b"hello");
}

#[test]
fn qcow2_image_on_block_device_opens() {
    let scratch = ScratchDir::new("blockdev-qcow2");
    let image = scratch.join("disk.qcow2");
    create_qcow2(&image, 64 * MIB, None).unwrap();
    let device = LoopDevice::attach(&image);

    let disk = Disk::open(&device.0, None, Access::ReadOnly).unwrap();

    assert_eq!(disk.format(), Format::Qcow2);
    assert_eq!(disk.size(), 64 * MIB);
}

//! Fuzz target: the input is an image file. It is opened as qcow2 from an
//! already-open file (as the vm process does), and if that succeeds, a
//! spread of ranges is read. Any panic, hang or out-of-bounds access is a
//! finding; errors are expected.

#![no_main]

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use disk::{Access, Chain, ChainFile, Disk, Format};
use libfuzzer_sys::fuzz_target;

/// Number of ranges read from each image that opens.
const READS: u64 = 16;

/// Length of each read.
const READ_BYTES: usize = 64 * 1024;

fn scratch_path() -> PathBuf {
    let directory = std::env::var_os("DISK_FUZZ_DIR").unwrap_or_else(|| "/dev/shm".into());
    PathBuf::from(directory).join(format!("disk-fuzz-{}.img", std::process::id()))
}

fuzz_target!(|image: &[u8]| {
    let path = scratch_path();
    let mut file = File::create(&path).expect("scratch directory is writable");
    file.write_all(image).expect("scratch file takes the input");
    let file = File::open(&path).expect("scratch file reopens");
    let chain = Chain {
        access: Access::ReadOnly,
        files: vec![ChainFile {
            path: path.clone(),
            format: Format::Qcow2,
            file,
        }],
    };

    let Ok(disk) = Disk::from_chain(chain) else {
        return;
    };
    let mut buf = vec![0u8; READ_BYTES];
    let size = disk.size();
    for index in 0..READS {
        let offset = (size / READS).saturating_mul(index);
        let length = (size - offset).min(READ_BYTES as u64) as usize;
        let _ = disk.read_at(&mut buf[..length], offset);
    }
});

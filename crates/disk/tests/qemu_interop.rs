//! Interoperability with QEMU's block layer: images made and written by
//! qemu-img and qemu-io read back exactly, and images written by this crate
//! pass `qemu-img check` and compare equal to a raw reference.
//!
//! Needs qemu-img and qemu-io (Debian's qemu-utils) in PATH.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::{
    CheckResult, Rng, ScratchDir, first_difference, qemu_img, qemu_img_check, qemu_io, text,
};
use disk::{Access, Backing, Disk, Format, create_qcow2};

const MIB: u64 = 1024 * 1024;

/// The expected contents of a disk, updated alongside each write.
struct Model {
    bytes: Vec<u8>,
}

impl Model {
    fn new(size: u64) -> Model {
        Model {
            bytes: vec![0; size as usize],
        }
    }

    fn fill(&mut self, offset: u64, length: u64, value: u8) {
        self.bytes[offset as usize..(offset + length) as usize].fill(value);
    }
}

/// Writes a byte pattern with qemu-io and records it in the model.
fn pattern(commands: &mut Vec<String>, model: &mut Model, offset: u64, length: u64, value: u8) {
    commands.push(format!("write -P {value:#x} {offset} {length}"));
    model.fill(offset, length, value);
}

/// Writes zeroes with qemu-io (zero clusters where aligned) and records it.
fn zeroes(commands: &mut Vec<String>, model: &mut Model, offset: u64, length: u64) {
    commands.push(format!("write -z {offset} {length}"));
    model.fill(offset, length, 0);
}

/// Reads the whole disk through this crate and compares it with the model.
fn assert_disk_matches(disk: &Disk, model: &Model, case: &str) {
    assert_eq!(disk.size(), model.bytes.len() as u64, "{case}: disk size");
    let mut actual = vec![0u8; model.bytes.len()];
    // Read in odd-sized pieces so requests cross cluster boundaries.
    let piece = 300_007usize;
    for (index, chunk) in actual.chunks_mut(piece).enumerate() {
        disk.read_at(chunk, (index * piece) as u64)
            .unwrap_or_else(|error| panic!("{case}: read failed: {error}"));
    }
    if let Some(offset) = first_difference(&actual, &model.bytes) {
        panic!(
            "{case}: data differs at offset {offset:#x}: read {:#x}, expected {:#x}",
            actual[offset], model.bytes[offset]
        );
    }
}

#[test]
fn qemu_written_images_read_back() {
    let scratch = ScratchDir::new("qemu-written");
    let size = 16 * MIB;
    for compat in ["0.10", "1.1"] {
        for cluster_size in [512u64, 4096, 65536, 2 * MIB] {
            let case = format!("compat {compat}, cluster size {cluster_size}");
            let image = scratch.join(&format!("c{compat}-{cluster_size}.qcow2"));
            let options = format!("compat={compat},cluster_size={cluster_size}");
            qemu_img(&[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &options,
                text(&image),
                "16M",
            ]);

            let mut model = Model::new(size);
            let mut commands = Vec::new();
            pattern(&mut commands, &mut model, 0, 1000, 0x11);
            pattern(&mut commands, &mut model, cluster_size - 100, 300, 0x22);
            pattern(&mut commands, &mut model, MIB + 7, 70_000, 0x33);
            pattern(&mut commands, &mut model, 4 * MIB, 4 * MIB, 0x44);
            zeroes(&mut commands, &mut model, 6 * MIB, 2 * MIB);
            pattern(&mut commands, &mut model, size - 5000, 5000, 0x55);
            qemu_io(&image, "qcow2", &commands);

            let disk = Disk::open(&image, None, Access::ReadOnly)
                .unwrap_or_else(|error| panic!("{case}: open failed: {error}"));
            assert_eq!(disk.format(), Format::Qcow2, "{case}");
            assert_disk_matches(&disk, &model, &case);
        }
    }
}

#[test]
fn compressed_clusters_read_back() {
    let scratch = ScratchDir::new("compressed");
    let raw = scratch.join("source.raw");
    let size = 8 * MIB;
    qemu_img(&["create", "-q", "-f", "raw", text(&raw), "8M"]);
    let mut model = Model::new(size);
    let mut commands = Vec::new();
    // Compressible runs and one incompressible region.
    pattern(&mut commands, &mut model, 0, 3 * MIB, 0x5a);
    pattern(&mut commands, &mut model, 5 * MIB + 123, 40_000, 0xc3);
    qemu_io(&raw, "raw", &commands);
    let mut noise = vec![0u8; 200_000];
    Rng::new(7).fill(&mut noise);
    let raw_file = OpenOptions::new().write(true).open(&raw).unwrap();
    raw_file.write_all_at(&noise, 6 * MIB).unwrap();
    model.bytes[6 * MIB as usize..6 * MIB as usize + noise.len()].copy_from_slice(&noise);

    for cluster_size in ["4096", "65536"] {
        let image = scratch.join(&format!("compressed-{cluster_size}.qcow2"));
        let options = format!("cluster_size={cluster_size}");
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            &options,
            text(&raw),
            text(&image),
        ]);
        let map = qemu_img(&["map", "--output=json", text(&image)]);
        assert!(
            map.contains("\"compressed\": true"),
            "image has no compressed clusters: {map}"
        );

        let disk = Disk::open(&image, None, Access::ReadOnly).unwrap();
        assert_disk_matches(
            &disk,
            &model,
            &format!("compressed, cluster size {cluster_size}"),
        );
    }
}

#[test]
fn zero_clusters_hide_backing_data() {
    let scratch = ScratchDir::new("zero-clusters");
    let base = scratch.join("base.qcow2");
    let top = scratch.join("top.qcow2");
    let size = 4 * MIB;
    qemu_img(&["create", "-q", "-f", "qcow2", text(&base), "4M"]);
    let mut model = Model::new(size);
    let mut commands = Vec::new();
    pattern(&mut commands, &mut model, 0, size, 0x77);
    qemu_io(&base, "qcow2", &commands);

    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        text(&top),
    ]);
    let mut commands = Vec::new();
    zeroes(&mut commands, &mut model, MIB, MIB);
    qemu_io(&top, "qcow2", &commands);
    let map = qemu_img(&["map", "--output=json", text(&top)]);
    assert!(
        map.contains("\"zero\": true, \"data\": false"),
        "no zero clusters: {map}"
    );

    let disk = Disk::open(&top, None, Access::ReadOnly).unwrap();
    assert_disk_matches(&disk, &model, "zero clusters over a backing image");
}

#[test]
fn three_level_chain_with_relative_names_reads_back() {
    let scratch = ScratchDir::new("chain3");
    std::fs::create_dir(scratch.join("images")).unwrap();
    let base = scratch.join("images/base.qcow2");
    let middle = scratch.join("images/middle.qcow2");
    let top = scratch.join("images/top.qcow2");
    let size = 8 * MIB;
    let mut model = Model::new(size);

    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        text(&base),
        "8M",
    ]);
    let mut commands = Vec::new();
    pattern(&mut commands, &mut model, 0, 6 * MIB, 0xa1);
    qemu_io(&base, "qcow2", &commands);

    // Relative names resolve against the referencing image's directory,
    // not the working directory.
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        text(&middle),
    ]);
    let mut commands = Vec::new();
    pattern(&mut commands, &mut model, MIB + 512, 100_000, 0xb2);
    pattern(&mut commands, &mut model, 5 * MIB, 2 * MIB, 0xb3);
    qemu_io(&middle, "qcow2", &commands);

    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "middle.qcow2",
        "-F",
        "qcow2",
        text(&top),
    ]);
    let mut commands = Vec::new();
    pattern(&mut commands, &mut model, MIB + 50_000, 3000, 0xc4);
    pattern(&mut commands, &mut model, 7 * MIB + 1, 65_536, 0xc5);
    qemu_io(&top, "qcow2", &commands);

    let chain = disk::open_chain(&top, None, Access::ReadOnly).unwrap();
    let paths: Vec<_> = chain.files.iter().map(|file| file.path.clone()).collect();
    assert_eq!(paths, [top.clone(), middle.clone(), base.clone()]);
    let disk = Disk::from_chain(chain).unwrap();
    assert_disk_matches(&disk, &model, "three-level chain");
}

#[test]
fn raw_base_under_qcow2_reads_back() {
    let scratch = ScratchDir::new("raw-base");
    let base = scratch.join("base.raw");
    let top = scratch.join("top.qcow2");
    let size = 4 * MIB;
    let mut model = Model::new(size);
    qemu_img(&["create", "-q", "-f", "raw", text(&base), "4M"]);
    let mut commands = Vec::new();
    pattern(&mut commands, &mut model, 1000, 3 * MIB, 0x3c);
    qemu_io(&base, "raw", &commands);

    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        text(&top),
    ]);
    let mut commands = Vec::new();
    pattern(&mut commands, &mut model, 2 * MIB + 100, 5000, 0x4d);
    qemu_io(&top, "qcow2", &commands);

    let chain = disk::open_chain(&top, None, Access::ReadOnly).unwrap();
    let formats: Vec<_> = chain.files.iter().map(|file| file.format).collect();
    assert_eq!(formats, [Format::Qcow2, Format::Raw]);
    let disk = Disk::from_chain(chain).unwrap();
    assert_disk_matches(&disk, &model, "raw base under qcow2");
}

#[test]
fn overlay_larger_than_base_reads_zeroes_past_base() {
    let scratch = ScratchDir::new("larger-overlay");
    let base = scratch.join("base.qcow2");
    let top = scratch.join("top.qcow2");
    let mut model = Model::new(8 * MIB);
    qemu_img(&["create", "-q", "-f", "qcow2", text(&base), "3M"]);
    let mut commands = Vec::new();
    pattern(&mut commands, &mut model, 0, 3 * MIB, 0x99);
    qemu_io(&base, "qcow2", &commands);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        text(&top),
        "8M",
    ]);

    let disk = Disk::open(&top, None, Access::ReadOnly).unwrap();
    assert_disk_matches(&disk, &model, "overlay larger than its base");
}

/// Applies one random operation to both the disk and the reference.
fn random_operation(rng: &mut Rng, disk: &Disk, reference: &std::fs::File, size: u64) {
    let offset = rng.below(size - 1);
    let length = (1 + rng.below(200_000)).min(size - offset);
    match rng.below(10) {
        0 => {
            disk.write_zeroes(offset, length).unwrap();
            reference
                .write_all_at(&vec![0; length as usize], offset)
                .unwrap();
        }
        1 => {
            disk.discard(offset, length).unwrap();
            reference
                .write_all_at(&vec![0; length as usize], offset)
                .unwrap();
        }
        2 => disk.flush().unwrap(),
        _ => {
            let mut data = vec![0u8; length as usize];
            rng.fill(&mut data);
            disk.write_at(&data, offset).unwrap();
            reference.write_all_at(&data, offset).unwrap();
        }
    }
}

/// Who creates the top image of the copy-on-write chain.
#[derive(Clone, Copy, Debug)]
enum TopImage {
    /// This crate's create_qcow2 (qcow2 version 3).
    Ours,
    /// qemu-img with compat=0.10 (qcow2 version 2, no zero clusters).
    QemuVersion2,
}

/// Builds base.qcow2 (qemu) <- middle.qcow2 (qemu) <- top.qcow2, with data
/// in both bases, so writes to top need copy-on-write.
fn build_cow_chain(scratch: &ScratchDir, size: &str, top_image: TopImage) {
    let base = scratch.join("base.qcow2");
    let middle = scratch.join("middle.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=65536",
        text(&base),
        size,
    ]);
    qemu_io(
        &base,
        "qcow2",
        &[
            "write -P 0x61 0 3M".to_string(),
            "write -P 0x62 5M 2M".to_string(),
        ],
    );
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        text(&middle),
    ]);
    qemu_io(
        &middle,
        "qcow2",
        &[
            "write -P 0x63 1M 1M".to_string(),
            "write -c -P 0x64 6M 64k".to_string(),
        ],
    );
    let top = scratch.join("top.qcow2");
    match top_image {
        TopImage::Ours => {
            let backing = Backing {
                name: "middle.qcow2",
                format: Format::Qcow2,
            };
            create_qcow2(&top, 8 * MIB, Some(backing)).unwrap();
        }
        TopImage::QemuVersion2 => {
            qemu_img(&[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                "compat=0.10",
                "-b",
                "middle.qcow2",
                "-F",
                "qcow2",
                text(&top),
            ]);
        }
    }
}

#[test]
fn random_chain_writes_pass_check() {
    let cases = [
        (1u64, TopImage::Ours),
        (2, TopImage::Ours),
        (3, TopImage::Ours),
        (4, TopImage::QemuVersion2),
        (5, TopImage::QemuVersion2),
    ];
    for (seed, top_image) in cases {
        let scratch = ScratchDir::new("random-writes");
        build_cow_chain(&scratch, "8M", top_image);
        let top = scratch.join("top.qcow2");
        let reference_path = scratch.join("reference.raw");
        qemu_img(&["convert", "-O", "raw", text(&top), text(&reference_path)]);
        let reference = OpenOptions::new()
            .write(true)
            .open(&reference_path)
            .unwrap();

        let disk = Disk::open(&top, None, Access::ReadWrite).unwrap();
        let mut rng = Rng::new(seed);
        for _ in 0..300 {
            random_operation(&mut rng, &disk, &reference, disk.size());
        }
        disk.flush().unwrap();
        drop(disk);

        assert_eq!(qemu_img_check(&top), CheckResult::Clean, "seed {seed}");
        let compare = common::run_tool(
            "qemu-img",
            &[
                "compare",
                "-f",
                "qcow2",
                "-F",
                "raw",
                text(&top),
                text(&reference_path),
            ],
        );
        assert_eq!(
            compare.status, 0,
            "seed {seed}: qemu-img compare: {}{}",
            compare.stdout, compare.stderr
        );
        assert!(
            compare.stdout.contains("Images are identical"),
            "seed {seed}: {}",
            compare.stdout
        );
    }
}

#[test]
fn created_overlay_passes_qemu_img() {
    let scratch = ScratchDir::new("create-backing");
    let base = scratch.join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", text(&base), "8M"]);
    let top = scratch.join("top.qcow2");
    create_qcow2(
        &top,
        8 * MIB,
        Some(Backing {
            name: "base.qcow2",
            format: Format::Qcow2,
        }),
    )
    .unwrap();

    let info = qemu_img(&["info", "--output=json", text(&top)]);
    assert!(
        info.contains("\"backing-filename\": \"base.qcow2\""),
        "{info}"
    );
    assert!(
        info.contains("\"backing-filename-format\": \"qcow2\""),
        "{info}"
    );
    assert!(info.contains("\"cluster-size\": 65536"), "{info}");
    assert!(info.contains("\"virtual-size\": 8388608"), "{info}");
    assert_eq!(qemu_img_check(&top), CheckResult::Clean);
    assert_eq!(
        std::fs::metadata(&top)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap(),
        0o600
    );
}

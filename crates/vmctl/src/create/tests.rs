//! Tests of `vmctl create`: every option, every message, the chain limit,
//! and qemu-img's view of the images made.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("vmctl-create-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn args(disk: &str) -> CreateArgs {
    CreateArgs {
        disk: disk.to_string(),
        ..CreateArgs::default()
    }
}

/// Runs the command and returns its result and warnings.
fn run_collecting(args: &CreateArgs) -> (Result<String, CreateError>, Vec<String>) {
    let mut warnings = Vec::new();
    let result = run_with_warnings(args, &mut |warning| warnings.push(warning.to_string()));
    (result, warnings)
}

fn qemu_img_info(path: &str) -> String {
    let output = Command::new("qemu-img")
        .args(["info", "--output=json", path])
        .output()
        .expect("qemu-img runs (install qemu-utils)");
    assert!(
        output.status.success(),
        "qemu-img info {path}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn file_mode(path: &str) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn raw_image_is_created_sparse_with_mode_0600() {
    let scratch = Scratch::new("raw");
    let disk = scratch.path("disk.img");
    let mut args = args(&disk);
    args.size = Some("10M".to_string());

    let (result, warnings) = run_collecting(&args);

    assert_eq!(result.unwrap(), "raw imagefile created");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 10 * MIB);
    assert_eq!(file_mode(&disk), 0o600);
}

#[test]
fn qcow2_extension_selects_qcow2() {
    let scratch = Scratch::new("qcow2-ext");
    let disk = scratch.path("disk.QCOW2");
    let mut args = args(&disk);
    args.size = Some("1G".to_string());

    let (result, _) = run_collecting(&args);

    assert_eq!(result.unwrap(), "qcow2 imagefile created");
    let info = qemu_img_info(&disk);
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    assert!(info.contains("\"virtual-size\": 1073741824"), "{info}");
    assert!(info.contains("\"cluster-size\": 65536"), "{info}");
    assert_eq!(file_mode(&disk), 0o600);
}

#[test]
fn format_prefix_overrides_extension() {
    let scratch = Scratch::new("prefix");
    let qcow2 = scratch.path("a.raw");
    let raw = scratch.path("b.qcow2");
    let mut qcow2_args = args(&format!("qcow2:{qcow2}"));
    qcow2_args.size = Some("1M".to_string());
    let mut raw_args = args(&format!("raw:{raw}"));
    raw_args.size = Some("1M".to_string());

    assert_eq!(
        run_collecting(&qcow2_args).0.unwrap(),
        "qcow2 imagefile created"
    );
    assert_eq!(
        run_collecting(&raw_args).0.unwrap(),
        "raw imagefile created"
    );

    assert!(qemu_img_info(&qcow2).contains("\"format\": \"qcow2\""));
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), MIB);
}

#[test]
fn size_is_rounded_down_with_warning() {
    let scratch = Scratch::new("round");
    let disk = scratch.path("disk.raw");
    let mut args = args(&disk);
    args.size = Some("1.5M".to_string());
    let mut odd = self::args(&scratch.path("odd.raw"));
    odd.size = Some("3145729".to_string());

    let (result, warnings) = run_collecting(&args);
    let (odd_result, odd_warnings) = run_collecting(&odd);

    assert_eq!(result.unwrap(), "raw imagefile created");
    assert_eq!(warnings, ["disk size rounded to 1.0M"]);
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), MIB);
    assert_eq!(odd_result.unwrap(), "raw imagefile created");
    assert_eq!(odd_warnings, ["disk size rounded to 3.0M"]);
}

#[test]
fn size_errors_match_openbsd() {
    let cases = [
        ("10Q", "invalid disk size: 10Q: Invalid argument"),
        ("", "invalid disk size: : Invalid argument"),
        ("abc", "invalid disk size: abc: Invalid argument"),
        (
            "99999999999E",
            "invalid disk size: 99999999999E: Result too large",
        ),
        ("1023K", "disk size must be at least 1MB"),
        ("-5M", "disk size must be at least 1MB"),
    ];
    for (size, message) in cases {
        let scratch = Scratch::new("size-errors");
        let mut args = args(&scratch.path("disk.raw"));
        args.size = Some(size.to_string());

        let error = run_collecting(&args).0.unwrap_err();

        assert_eq!(error.to_string(), message, "size {size:?}");
        assert!(
            !Path::new(&scratch.path("disk.raw")).exists(),
            "size {size:?}"
        );
    }
}

#[test]
fn missing_size_asks_for_usage() {
    let scratch = Scratch::new("no-size");
    let disk = scratch.path("disk.raw");

    let error = run_collecting(&args(&disk)).0.unwrap_err();

    assert_eq!(
        error.to_string(),
        format!("could not create {disk}: missing size argument")
    );
    assert!(error.prints_usage());
}

#[test]
fn existing_file_is_not_overwritten() {
    let scratch = Scratch::new("exists");
    let disk = scratch.path("disk.raw");
    std::fs::write(&disk, b"keep").unwrap();
    let mut args = args(&disk);
    args.size = Some("1M".to_string());

    let error = run_collecting(&args).0.unwrap_err();

    assert_eq!(
        error.to_string(),
        "create imagefile operation failed: File exists"
    );
    assert_eq!(std::fs::read(&disk).unwrap(), b"keep");
}

#[test]
fn base_and_input_conflict() {
    let scratch = Scratch::new("conflict");
    let mut args = args(&scratch.path("disk.qcow2"));
    args.base = Some("base.qcow2".to_string());
    args.input = Some("input.raw".to_string());

    let error = run_collecting(&args).0.unwrap_err();

    assert_eq!(error.to_string(), "conflicting -b and -i arguments");
}

#[test]
fn base_requires_qcow2_target() {
    let scratch = Scratch::new("base-raw-target");
    let mut args = args(&scratch.path("disk.raw"));
    args.base = Some("base.qcow2".to_string());

    let error = run_collecting(&args).0.unwrap_err();

    assert_eq!(error.to_string(), "base images require qcow2 disk format");
}

/// Creates a qcow2 image of `size` in `scratch` through the command.
fn create_qcow2_image(
    scratch: &Scratch,
    name: &str,
    base: Option<&str>,
    size: Option<&str>,
) -> Result<String, CreateError> {
    let mut args = args(&scratch.path(name));
    args.base = base.map(str::to_string);
    args.size = size.map(str::to_string);
    run_collecting(&args).0
}

#[test]
fn image_with_base_takes_base_size_and_relative_name() {
    let scratch = Scratch::new("base");
    create_qcow2_image(&scratch, "base.qcow2", None, Some("20M")).unwrap();

    let result = create_qcow2_image(&scratch, "derived.qcow2", Some("base.qcow2"), None);

    assert_eq!(result.unwrap(), "qcow2 imagefile created");
    let info = qemu_img_info(&scratch.path("derived.qcow2"));
    assert!(
        info.contains("\"backing-filename\": \"base.qcow2\""),
        "{info}"
    );
    assert!(info.contains("\"virtual-size\": 20971520"), "{info}");
    let check = Command::new("qemu-img")
        .args(["check", &scratch.path("derived.qcow2")])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn base_size_must_match_requested_size() {
    let scratch = Scratch::new("base-size");
    create_qcow2_image(&scratch, "base.qcow2", None, Some("20M")).unwrap();

    let same = create_qcow2_image(&scratch, "same.qcow2", Some("base.qcow2"), Some("20M"));
    let other = create_qcow2_image(&scratch, "other.qcow2", Some("base.qcow2"), Some("30M"));

    assert_eq!(same.unwrap(), "qcow2 imagefile created");
    assert_eq!(
        other.unwrap_err().to_string(),
        "base size does not match requested size"
    );
    assert!(!Path::new(&scratch.path("other.qcow2")).exists());
}

#[test]
fn raw_base_is_rejected() {
    let scratch = Scratch::new("base-raw");
    std::fs::write(scratch.path("base.img"), vec![0u8; MIB as usize]).unwrap();

    let error = create_qcow2_image(&scratch, "derived.qcow2", Some("base.img"), None).unwrap_err();

    assert_eq!(error.to_string(), "base image is not a qcow2 file");
}

#[test]
fn missing_base_names_the_file() {
    let scratch = Scratch::new("base-missing");

    let error =
        create_qcow2_image(&scratch, "derived.qcow2", Some("gone.qcow2"), None).unwrap_err();

    assert_eq!(
        message(&error),
        format!(
            "disk {}: cannot open image: No such file or directory",
            scratch.path("gone.qcow2")
        )
    );
    assert!(!Path::new(&scratch.path("derived.qcow2")).exists());
}

#[test]
fn chain_of_four_files_is_the_limit() {
    let scratch = Scratch::new("chain-limit");
    create_qcow2_image(&scratch, "1.qcow2", None, Some("8M")).unwrap();
    create_qcow2_image(&scratch, "2.qcow2", Some("1.qcow2"), None).unwrap();
    create_qcow2_image(&scratch, "3.qcow2", Some("2.qcow2"), None).unwrap();

    let fourth = create_qcow2_image(&scratch, "4.qcow2", Some("3.qcow2"), None);
    let fifth = create_qcow2_image(&scratch, "5.qcow2", Some("4.qcow2"), None);

    assert_eq!(fourth.unwrap(), "qcow2 imagefile created");
    assert_eq!(
        fifth.unwrap_err().to_string(),
        format!(
            "disk {}: backing chain is longer than 4 files",
            scratch.path("5.qcow2")
        )
    );
    assert!(!Path::new(&scratch.path("5.qcow2")).exists());
    assert!(qemu_img_info(&scratch.path("4.qcow2")).contains("\"backing-filename\": \"3.qcow2\""));
}

#[test]
fn input_image_is_copied_and_size_rounded_up() {
    let scratch = Scratch::new("input");
    let input = scratch.path("input.raw");
    let mut contents = vec![0u8; 1_500_000];
    contents[..4096].fill(0x11);
    contents[1_400_000..1_450_000].fill(0x22);
    std::fs::write(&input, &contents).unwrap();
    let output = scratch.path("copy.qcow2");
    let mut args = args(&output);
    args.input = Some(input.clone());

    let (result, warnings) = run_collecting(&args);

    assert_eq!(result.unwrap(), "qcow2 imagefile created");
    assert_eq!(warnings, ["destination size rounded to 2 megabytes"]);
    let copy = Disk::open(Path::new(&output), None, Access::ReadOnly).unwrap();
    assert_eq!(copy.size(), 2 * MIB);
    let mut read = vec![0u8; contents.len()];
    copy.read_at(&mut read, 0).unwrap();
    assert!(read == contents, "copy differs from input");
    let compare = Command::new("qemu-img")
        .args(["compare", "-F", "raw", &output, &input])
        .output()
        .unwrap();
    // The copy is larger; qemu-img compare accepts zeroes past the smaller image.
    assert!(
        compare.status.success(),
        "{}",
        String::from_utf8_lossy(&compare.stdout)
    );
}

#[test]
fn input_qcow2_chain_is_flattened() {
    let scratch = Scratch::new("input-chain");
    create_qcow2_image(&scratch, "base.qcow2", None, Some("4M")).unwrap();
    {
        let base = Disk::open(
            Path::new(&scratch.path("base.qcow2")),
            None,
            Access::ReadWrite,
        )
        .unwrap();
        base.write_at(&[0x33; 65536], MIB).unwrap();
    }
    create_qcow2_image(&scratch, "top.qcow2", Some("base.qcow2"), None).unwrap();
    let output = scratch.path("flat.raw");
    let mut args = args(&output);
    args.input = Some(format!("qcow2:{}", scratch.path("top.qcow2")));

    let (result, warnings) = run_collecting(&args);

    assert_eq!(result.unwrap(), "raw imagefile created");
    assert!(warnings.is_empty(), "{warnings:?}");
    let flat = std::fs::read(&output).unwrap();
    assert_eq!(flat.len() as u64, 4 * MIB);
    assert!(
        flat[MIB as usize..MIB as usize + 65536]
            .iter()
            .all(|&b| b == 0x33)
    );
    assert!(flat[..MIB as usize].iter().all(|&b| b == 0));
}

#[test]
fn input_errors_match_openbsd() {
    let scratch = Scratch::new("input-errors");
    let input = scratch.path("input.raw");
    std::fs::write(&input, vec![1u8; 3 * MIB as usize]).unwrap();

    let mut smaller = args(&scratch.path("small.raw"));
    smaller.input = Some(input.clone());
    smaller.size = Some("2M".to_string());
    let mut missing = args(&scratch.path("none.raw"));
    missing.input = Some(scratch.path("gone.raw"));
    std::fs::write(scratch.path("exists.raw"), b"").unwrap();
    let mut exists = args(&scratch.path("exists.raw"));
    exists.input = Some(input.clone());

    assert_eq!(
        run_collecting(&smaller).0.unwrap_err().to_string(),
        "size cannot be smaller than input disk size"
    );
    assert_eq!(
        message(&run_collecting(&missing).0.unwrap_err()),
        format!(
            "failed to open source image file: disk {}: cannot open image: No such file or directory",
            scratch.path("gone.raw")
        )
    );
    assert_eq!(
        run_collecting(&exists).0.unwrap_err().to_string(),
        "failed to create destination image file: File exists"
    );
}

#[test]
fn disk_type_follows_prefix_magic_extension_default() {
    let scratch = Scratch::new("disk-type");
    let qcow2_named_raw = scratch.path("image.raw");
    disk::create_qcow2(Path::new(&qcow2_named_raw), MIB, None).unwrap();

    assert_eq!(parse_disk_type("raw:/x.qcow2"), (Format::Raw, "/x.qcow2"));
    assert_eq!(parse_disk_type("qcow2:/x.raw"), (Format::Qcow2, "/x.raw"));
    assert_eq!(
        parse_disk_type(&qcow2_named_raw),
        (Format::Qcow2, qcow2_named_raw.as_str())
    );
    assert_eq!(
        parse_disk_type("/none/x.Qcow2"),
        (Format::Qcow2, "/none/x.Qcow2")
    );
    assert_eq!(parse_disk_type("/none/x.img"), (Format::Raw, "/none/x.img"));
    assert_eq!(parse_disk_type("/none/x"), (Format::Raw, "/none/x"));
}

#[test]
fn fmt_scaled_matches_openbsd() {
    let cases = [
        (0, "0B"),
        (512, "512B"),
        (1024, "1.0K"),
        (1536, "1.5K"),
        (MIB, "1.0M"),
        (10 * MIB, "10.0M"),
        (100 * MIB, "100M"),
        (1023 * MIB, "1023M"),
        (1024 * MIB, "1.0G"),
        (1536 * MIB, "1.5G"),
        (1075 * MIB, "1.0G"),
        (1076 * MIB, "1.1G"),
    ];
    for (bytes, text) in cases {
        assert_eq!(fmt_scaled(bytes), text, "{bytes} bytes");
    }
}

#[test]
fn scan_scaled_accepts_units_and_fractions() {
    let cases: [(&str, u64); 7] = [
        ("1048576", 1_048_576),
        ("1m", 1_048_576),
        ("1.5G", 1_610_612_736),
        ("2T", 2 << 40),
        ("512B", 512),
        (" 7K", 7168),
        ("1.25k", 1280),
    ];
    for (text, bytes) in cases {
        assert_eq!(scan_scaled(text), Ok(bytes), "{text:?}");
    }
}

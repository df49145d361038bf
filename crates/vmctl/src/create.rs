//! `vmctl create`: make a new raw or qcow2 disk image, empty, on top of a
//! base image, or as a copy of another image.
//!
//! Runs entirely in vmctl, without vmd, as on OpenBSD. The options,
//! format choice and messages follow OpenBSD's vmctl; this module does the
//! command's work and leaves printing the result to the caller.

use std::path::{Path, PathBuf};

use disk::{Access, Backing, Disk, Format, MAX_CHAIN_FILES};
use proto::units::{ScanError, fmt_scaled, scan_scaled};

/// Usage of the command, after `vmctl [-v] `.
pub const USAGE: &str = "create [-b base | -i disk] [-s size] disk";

const MIB: u64 = 1024 * 1024;

/// Chunk size for copying an input image; all-zero chunks are skipped.
const COPY_CHUNK_BYTES: usize = 64 * 1024;

/// Arguments of `vmctl create`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct CreateArgs {
    /// Create a qcow2 image on top of this qcow2 base image. The name is
    /// stored as given; a relative name is relative to the new image's
    /// directory.
    #[arg(short = 'b', value_name = "base")]
    pub base: Option<String>,
    /// Copy this raw or qcow2 image (optionally prefixed raw: or qcow2:)
    /// into the new image.
    #[arg(short = 'i', value_name = "disk")]
    pub input: Option<String>,
    /// Image size in bytes, with an optional K, M, G, T, P or E suffix
    /// (powers of 1024); rounded down to a whole MiB, at least 1M.
    #[arg(short = 's', value_name = "size", overrides_with = "size")]
    pub size: Option<String>,
    /// The image to create. A raw: or qcow2: prefix sets the format;
    /// otherwise an existing file's magic or the .raw/.qcow2 extension
    /// decides, and raw is the default.
    #[arg(value_name = "disk")]
    pub disk: String,
}

/// Failure of `vmctl create`. Displays without the `vmctl: ` prefix; the
/// cause, where there is one, is the error's `source()`, to be printed
/// after ": " (see [`message`]).
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// -s is not a number with an optional unit.
    #[error("invalid disk size: {value}: {reason}")]
    InvalidSize {
        /// The -s argument.
        value: String,
        /// The parse error.
        reason: ScanError,
    },
    /// -s is below 1 MiB.
    #[error("disk size must be at least 1MB")]
    SizeTooSmall,
    /// Both -b and -i were given.
    #[error("conflicting -b and -i arguments")]
    ConflictingBaseAndInput,
    /// -b with a raw target.
    #[error("base images require qcow2 disk format")]
    BaseRequiresQcow2,
    /// Neither -s nor -b: there is no size. The caller prints the usage
    /// after this message.
    #[error("could not create {disk}: missing size argument")]
    MissingSize {
        /// The disk argument without its format prefix.
        disk: String,
    },
    /// The base image is raw.
    #[error("base image is not a qcow2 file")]
    BaseNotQcow2,
    /// -s differs from the base image's size.
    #[error("base size does not match requested size")]
    BaseSizeMismatch,
    /// The base image or one of its backing files cannot be opened.
    #[error(transparent)]
    OpenBase(disk::Error),
    /// The new image would make a chain longer than the limit.
    #[error("disk {disk}: backing chain is longer than {limit} files")]
    ChainTooLong {
        /// The image to be created.
        disk: String,
        /// The maximum number of files per disk.
        limit: usize,
    },
    /// Creating the image file failed (it exists, or the directory is not
    /// writable).
    #[error("create imagefile operation failed: {}", errno_text(.0))]
    CreateImage(disk::Error),
    /// The -i image cannot be opened.
    #[error("failed to open source image file")]
    OpenSource(#[source] disk::Error),
    /// -s is smaller than the -i image.
    #[error("size cannot be smaller than input disk size")]
    SizeBelowInput,
    /// Creating the image for -i failed.
    #[error("failed to create destination image file: {}", errno_text(.0))]
    CreateDestination(disk::Error),
    /// The image created for -i cannot be opened.
    #[error("failed to open destination image file")]
    OpenDestination(#[source] disk::Error),
    /// Reading the -i image failed.
    #[error("failed to read from source")]
    ReadSource(#[source] disk::Error),
    /// Writing the copy failed.
    #[error("failed to write to destination")]
    WriteDestination(#[source] disk::Error),
}

/// Joins an error and its chain of sources with ": ", as err(3) prints
/// them.
pub fn message(error: &dyn std::error::Error) -> String {
    proto::error_chain(error)
}

impl CreateError {
    /// Returns whether the caller should print the command's usage after the
    /// message, as OpenBSD's vmctl does for a missing size.
    pub fn prints_usage(&self) -> bool {
        matches!(self, CreateError::MissingSize { .. })
    }
}

/// Describes the system error behind a disk error the way err(3) does
/// ("File exists"), or the disk error itself when there is none.
fn errno_text(error: &disk::Error) -> String {
    let os_error = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error);
    match os_error {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => error.to_string(),
    }
}

/// Runs `vmctl create` for the command table and prints its outcome the
/// way OpenBSD's vmctl does: the success line on stderr with the `vmctl: `
/// prefix, a missing size as a bare message followed by the usage. Returns
/// the error message for the caller to print, or an empty one when it was
/// already printed.
pub fn run_command(args: &CreateArgs) -> Result<(), String> {
    match run(args) {
        Ok(line) => {
            proto::reportln!("vmctl: {line}");
            Ok(())
        }
        Err(error) if error.prints_usage() => {
            proto::reportln!("{error}");
            proto::reportln!("usage:\tvmctl [-v] {USAGE}");
            Err(String::new())
        }
        Err(error) => Err(message(&error)),
    }
}

/// Runs `vmctl create`, printing warnings to stderr with the `vmctl: `
/// prefix. Returns the success line without the prefix, for example
/// `qcow2 imagefile created`.
pub fn run(args: &CreateArgs) -> Result<String, CreateError> {
    run_with_warnings(args, &mut |warning| proto::reportln!("vmctl: {warning}"))
}

/// Runs `vmctl create`, passing each warning to `warn`.
pub fn run_with_warnings(
    args: &CreateArgs,
    warn: &mut dyn FnMut(&str),
) -> Result<String, CreateError> {
    let size = match &args.size {
        Some(text) => parse_size(text, warn)?,
        None => 0,
    };
    let (format, disk) = parse_disk_type(&args.disk);

    if let Some(input) = &args.input {
        if args.base.is_some() {
            return Err(CreateError::ConflictingBaseAndInput);
        }
        return convert(input, disk, format, size, warn);
    }
    if args.base.is_some() && format != Format::Qcow2 {
        return Err(CreateError::BaseRequiresQcow2);
    }
    if size == 0 && args.base.is_none() {
        return Err(CreateError::MissingSize {
            disk: disk.to_string(),
        });
    }

    create_image(format, disk, args.base.as_deref(), size).map_err(|error| match error {
        ImageError::File(error) => CreateError::CreateImage(error),
        ImageError::Base(error) => error,
    })?;
    Ok(format!("{} imagefile created", format.name()))
}

/// Failure of [`create_image`], split so that each caller can word a
/// failed file creation its own way.
enum ImageError {
    /// Creating or formatting the file failed.
    File(disk::Error),
    /// The base image was rejected before any file was created.
    Base(CreateError),
}

/// Creates the image file; with a base, checks the base and takes its
/// size.
fn create_image(
    format: Format,
    disk: &str,
    base: Option<&str>,
    size: u64,
) -> Result<(), ImageError> {
    let path = Path::new(disk);
    let Some(base) = base else {
        let created = match format {
            Format::Raw => disk::create_raw(path, size),
            Format::Qcow2 => disk::create_qcow2(path, size, None),
        };
        return created.map_err(ImageError::File);
    };

    let size = check_base(disk, base, size).map_err(ImageError::Base)?;
    let backing = Backing {
        name: base,
        format: Format::Qcow2,
    };
    disk::create_qcow2(path, size, Some(backing)).map_err(ImageError::File)
}

/// Opens the base image's chain as the new image will see it, and returns
/// the size the new image gets.
///
/// The base is resolved against the new image's directory, because that
/// is how the stored name is read when the image is opened.
fn check_base(disk: &str, base: &str, size: u64) -> Result<u64, CreateError> {
    let base_path = disk::resolve_backing_path(Path::new(disk), base);
    let chain =
        disk::open_chain(&base_path, None, Access::ReadOnly).map_err(CreateError::OpenBase)?;
    if chain.files[0].format != Format::Qcow2 {
        return Err(CreateError::BaseNotQcow2);
    }
    if chain.files.len() + 1 > MAX_CHAIN_FILES {
        return Err(CreateError::ChainTooLong {
            disk: disk.to_string(),
            limit: MAX_CHAIN_FILES,
        });
    }
    let base_size = Disk::from_chain(chain)
        .map_err(CreateError::OpenBase)?
        .size();
    if size != 0 && size != base_size {
        return Err(CreateError::BaseSizeMismatch);
    }
    Ok(base_size)
}

/// Copies the image `input` into a new image `disk` (vmctl create -i).
fn convert(
    input: &str,
    disk: &str,
    format: Format,
    size: u64,
    warn: &mut dyn FnMut(&str),
) -> Result<String, CreateError> {
    let (input_format, input_path) = parse_disk_type(input);
    let source = Disk::open(Path::new(input_path), Some(input_format), Access::ReadOnly)
        .map_err(CreateError::OpenSource)?;

    let requested = if size == 0 { source.size() } else { size };
    if requested < source.size() {
        return Err(CreateError::SizeBelowInput);
    }
    let destination_size = requested.next_multiple_of(MIB);
    create_image(format, disk, None, destination_size).map_err(|error| match error {
        ImageError::File(error) => CreateError::CreateDestination(error),
        ImageError::Base(error) => error,
    })?;
    // A copy that fails half way leaves no image behind, so that running
    // the command again does not fail with "File exists".
    let copied = Disk::open(Path::new(disk), Some(format), Access::ReadWrite)
        .map_err(CreateError::OpenDestination)
        .and_then(|destination| {
            copy_nonzero_chunks(&source, &destination)?;
            destination.flush().map_err(CreateError::WriteDestination)
        });
    if let Err(error) = copied {
        let _ = std::fs::remove_file(disk);
        return Err(error);
    }

    if requested < destination_size {
        warn(&format!(
            "destination size rounded to {} megabytes",
            destination_size / MIB
        ));
    }
    Ok(format!("{} imagefile created", format.name()))
}

/// Copies `source` into `destination` chunk by chunk, leaving all-zero
/// chunks unwritten so the new image stays sparse.
fn copy_nonzero_chunks(source: &Disk, destination: &Disk) -> Result<(), CreateError> {
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    let mut offset = 0;
    while offset < source.size() {
        let length = (source.size() - offset).min(COPY_CHUNK_BYTES as u64) as usize;
        let chunk = &mut buf[..length];
        source
            .read_at(chunk, offset)
            .map_err(CreateError::ReadSource)?;
        if chunk.iter().any(|&byte| byte != 0) {
            destination
                .write_at(chunk, offset)
                .map_err(CreateError::WriteDestination)?;
        }
        offset += length as u64;
    }
    Ok(())
}

/// Splits an optional `raw:` or `qcow2:` prefix off `argument`, and picks
/// the format: the prefix, else the qcow2 magic of an existing file, else
/// the extension (case-insensitive), else raw.
pub fn parse_disk_type(argument: &str) -> (Format, &str) {
    if let Some(path) = argument.strip_prefix("raw:") {
        return (Format::Raw, path);
    }
    if let Some(path) = argument.strip_prefix("qcow2:") {
        return (Format::Qcow2, path);
    }
    if has_qcow2_magic(Path::new(argument)) {
        return (Format::Qcow2, argument);
    }
    let extension = Path::new(argument)
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("qcow2") => (Format::Qcow2, argument),
        _ => (Format::Raw, argument),
    }
}

/// Returns whether `path` is a readable regular file starting with the
/// qcow2 magic. Opening does not block, so a FIFO is just "not qcow2".
fn has_qcow2_magic(path: &Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut magic = [0u8; 4];
    std::fs::File::options()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(PathBuf::from(path))
        .and_then(|file| {
            if file.metadata()?.is_file() {
                Ok(file)
            } else {
                Err(std::io::ErrorKind::InvalidInput.into())
            }
        })
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"QFI\xfb")
}

/// Parses a size like OpenBSD's scan_scaled(3) and rounds it down to a
/// whole MiB, warning when that changes it. scan_scaled takes a sign, so a
/// negative size is "too small" rather than invalid.
fn parse_size(text: &str, warn: &mut dyn FnMut(&str)) -> Result<u64, CreateError> {
    let invalid = |reason| CreateError::InvalidSize {
        value: text.to_string(),
        reason,
    };
    let trimmed = text.trim_start();
    let (negative, unsigned) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    // Blanks are allowed only before the sign.
    if unsigned.trim() != unsigned {
        return Err(invalid(ScanError::Invalid));
    }
    let bytes = scan_scaled(unsigned).map_err(invalid)?;
    if negative || bytes < MIB {
        return Err(CreateError::SizeTooSmall);
    }
    let rounded = bytes / MIB * MIB;
    if rounded != bytes {
        warn(&format!("disk size rounded to {}", fmt_scaled(rounded)));
    }
    Ok(rounded)
}

#[cfg(test)]
mod tests;

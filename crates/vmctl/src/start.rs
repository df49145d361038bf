//! `vmctl start`.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use proto::units::{fmt_scaled, scan_scaled};
use proto::{ControlRequest, ControlResponse, DiskFormat, DiskRequest, ErrorCode, StartRequest};
use vmconf::{MAX_CPUS, MAX_DISKS, MAX_MEMORY_BYTES, MIN_MEMORY_BYTES};

use crate::client::{Client, strerror};

const MIB: u64 = 1 << 20;

/// Arguments of `vmctl start`.
#[derive(clap::Args, Debug)]
#[command(
    override_usage = "vmctl [-v] start [-c] [-b path] [-d disk] [--initrd path] [--cmdline string] [-m size] [-p cpus] id | name"
)]
pub struct StartArgs {
    /// Attach to the console once the VM runs.
    #[arg(short = 'c')]
    console: bool,
    /// Kernel to boot: a bzImage or ELF vmlinux.
    #[arg(short = 'b', value_name = "path")]
    kernel: Option<PathBuf>,
    /// Disk image, repeatable (up to 4); a raw: or qcow2: prefix sets the
    /// format, otherwise the image's first bytes decide.
    #[arg(short = 'd', value_name = "disk")]
    disks: Vec<String>,
    /// Initial ramdisk (a Linux extension).
    #[arg(long, value_name = "path")]
    initrd: Option<PathBuf>,
    /// Kernel command line (a Linux extension; default console=ttyS0).
    #[arg(long, value_name = "string")]
    cmdline: Option<String>,
    /// Memory size, with an optional suffix: 512M, 1G (default 512M).
    #[arg(short = 'm', value_name = "size")]
    memory: Option<String>,
    /// Number of virtual CPUs, 1 to 64 (a Linux extension; default 1).
    #[arg(short = 'p', value_name = "cpus")]
    cpus: Option<String>,
    /// The VM's name (or vmd id of a configured VM).
    id: String,
}

/// Runs `vmctl start`.
pub fn run(socket: &Path, args: &StartArgs) -> Result<(), String> {
    let memory_bytes = args
        .memory
        .as_deref()
        .map(|text| parse_memory(text, &mut |warning| proto::reportln!("vmctl: {warning}")))
        .transpose()?;
    let vcpus = args.cpus.as_deref().map(parse_cpus).transpose()?;
    let name = match crate::parse_target(&args.id)? {
        proto::VmTarget::Name(name) => {
            proto::check_vm_name(&name).map_err(|e| e.to_string())?;
            name
        }
        // vmd looks VMs up by name, so an id is resolved through the status list.
        proto::VmTarget::Id(id) => Client::connect(socket)?
            .status()?
            .into_iter()
            .find(|vm| vm.id == id)
            .map(|vm| vm.name)
            .ok_or_else(|| {
                format!(
                    "start vm command failed: {}",
                    strerror(ErrorCode::NOT_FOUND)
                )
            })?,
    };
    if args.disks.len() > MAX_DISKS {
        return Err("too many disks".to_string());
    }
    let disks = args
        .disks
        .iter()
        .map(|disk| parse_disk(disk))
        .collect::<Result<Vec<_>, _>>()?;
    let request = StartRequest {
        name: name.clone(),
        memory_bytes,
        vcpus,
        kernel: args.kernel.as_ref().map(|p| p.display().to_string()),
        initrd: args.initrd.as_ref().map(|p| p.display().to_string()),
        cmdline: args.cmdline.clone(),
        disks,
    };
    if request.has_options() && request.kernel.is_none() {
        // OpenBSD's check for a new VM: it needs something to boot.
        return Err("no kernel or disk/cdrom specified".to_string());
    }
    let kernel = args
        .kernel
        .as_deref()
        .map(|p| open_boot_file(p, "kernel"))
        .transpose()?;
    let initrd = args
        .initrd
        .as_deref()
        .map(|p| open_boot_file(p, "initrd"))
        .transpose()?;

    let mut fds = Vec::new();
    fds.extend(kernel.as_ref().map(|f| f.as_fd()));
    fds.extend(initrd.as_ref().map(|f| f.as_fd()));

    let client = Client::connect(socket)?;
    client.send(&ControlRequest::Start(request), &fds)?;
    match client.receive()? {
        ControlResponse::Started { id, tty, .. } => {
            if args.console {
                drop(client);
                return crate::console::attach(&tty);
            }
            proto::reportln!("vmctl: started vm {id} successfully, tty {tty}");
            Ok(())
        }
        ControlResponse::Error(error) => Err(start_error(&name, error)),
        _ => Err("unexpected response received from vmd".to_string()),
    }
}

fn start_error(name: &str, error: proto::ErrorReply) -> String {
    // vmd's detail names what failed ("disk /var/vm/a.qcow2: ..."), which
    // is more use than OpenBSD's fixed sentence for the code.
    if !error.detail.is_empty() {
        return format!("start {name}: {}", error.detail);
    }
    match error.code {
        ErrorCode::BIOS_MISSING => "vmm bios firmware file not found.".to_string(),
        ErrorCode::DISK_MISSING => "could not open disk image(s)".to_string(),
        ErrorCode::CDROM_MISSING => "could not find specified iso image".to_string(),
        ErrorCode::CDROM_INVALID => "specified iso image is not a regular file".to_string(),
        ErrorCode::PARENT_INVALID => "invalid template".to_string(),
        code => format!("start vm command failed: {}", strerror(code)),
    }
}

// vmctl opens the boot files itself, with the user's own permissions, and
// hands vmd the open files.
fn open_boot_file(path: &Path, what: &str) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    // Without blocking, so that a FIFO is refused below instead of
    // waiting for a writer.
    let file = File::options()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| {
            format!(
                "cannot open {what} '{}': {}",
                path.display(),
                proto::error_chain(&e)
            )
        })?;
    let metadata = file
        .metadata()
        .map_err(|e| format!("fstat {what}: {}", proto::error_chain(&e)))?;
    if !metadata.is_file() {
        return Err(format!("{what} must be a regular file"));
    }
    Ok(file)
}

/// Parses `-m`: at least 1M, at most 128G, rounded down to a MiB, with a
/// warning passed to `warn` when that changes it (as OpenBSD's vmctl).
pub fn parse_memory(text: &str, warn: &mut dyn FnMut(&str)) -> Result<u64, String> {
    let bytes = scan_scaled(text).map_err(|e| format!("invalid memory size: {text}: {e}"))?;
    if bytes < MIN_MEMORY_BYTES {
        return Err("memory size must be at least 1MB".to_string());
    }
    if bytes > MAX_MEMORY_BYTES {
        return Err(format!(
            "memory size too large (limit is {})",
            fmt_scaled(MAX_MEMORY_BYTES)
        ));
    }
    let rounded = bytes / MIB * MIB;
    if rounded != bytes {
        warn(&format!("memory size rounded to {}", fmt_scaled(rounded)));
    }
    Ok(rounded)
}

/// Parses `-d [raw:|qcow2:]path` into an absolute path and a format.
fn parse_disk(text: &str) -> Result<DiskRequest, String> {
    let (format, path) = match text.split_once(':') {
        Some(("raw", path)) => (Some(DiskFormat::Raw), path),
        Some(("qcow2", path)) => (Some(DiskFormat::Qcow2), path),
        _ => (None, text),
    };
    let absolute = std::fs::canonicalize(path)
        .map_err(|e| format!("invalid disk path: {path}: {}", proto::error_chain(&e)))?;
    Ok(DiskRequest {
        path: absolute.display().to_string(),
        format,
    })
}

fn parse_cpus(text: &str) -> Result<u8, String> {
    match text.parse::<u8>() {
        Ok(count) if (1..=MAX_CPUS).contains(&count) => Ok(count),
        _ => Err(format!(
            "invalid number of cpus: {text} (allowed: 1 to {MAX_CPUS})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_rounded_down_to_mib() {
        let mut warnings = Vec::new();
        let mut warn = |warning: &str| warnings.push(warning.to_string());
        assert_eq!(parse_memory("1.5M", &mut warn), Ok(MIB));
        assert_eq!(parse_memory("512M", &mut warn), Ok(512 * MIB));
        assert_eq!(warnings, ["memory size rounded to 1.0M"]);
    }

    #[test]
    fn memory_limits_have_openbsd_messages() {
        assert_eq!(
            parse_memory("512K", &mut |_| {}),
            Err("memory size must be at least 1MB".to_string())
        );
        assert_eq!(
            parse_memory("129G", &mut |_| {}),
            Err("memory size too large (limit is 128G)".to_string())
        );
        assert_eq!(
            parse_memory("lots", &mut |_| {}),
            Err("invalid memory size: lots: Invalid argument".to_string())
        );
    }

    #[test]
    fn cpus_outside_range_are_rejected() {
        assert_eq!(parse_cpus("2"), Ok(2));
        assert_eq!(
            parse_cpus("65"),
            Err("invalid number of cpus: 65 (allowed: 1 to 64)".to_string())
        );
        assert_eq!(
            parse_cpus("0"),
            Err("invalid number of cpus: 0 (allowed: 1 to 64)".to_string())
        );
    }
}

//! The measured VMMs: vmd driven by vmctl, and QEMU with the microvm and
//! pc machine types. Each builds the command that starts a VM, finds the
//! process that runs the guest, recognises its guest RAM mapping, and
//! stops the VM.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::smaps::GuestRam;

/// The path vmd's guest RAM mapping has in /proc/PID/smaps: the engine
/// maps a memfd named `guest-ram`, and the kernel shows a memfd mapping as
/// `/memfd:NAME (deleted)`.
const VMD_GUEST_RAM_PATH: &str = "/memfd:guest-ram (deleted)";

/// A measured VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VmmKind {
    /// vmd, started with `vmctl start -c`.
    Vmd,
    /// QEMU `-M microvm`.
    QemuMicrovm,
    /// QEMU `-M pc`.
    QemuPc,
}

impl VmmKind {
    /// Returns the name shown in tables.
    pub fn label(self) -> &'static str {
        match self {
            VmmKind::Vmd => "vmd",
            VmmKind::QemuMicrovm => "QEMU microvm",
            VmmKind::QemuPc => "QEMU pc",
        }
    }
}

/// The files a VM boots from.
pub struct BootFiles {
    /// The kernel: a bzImage or an ELF.
    pub kernel: PathBuf,
    /// The initial ramdisk, if any.
    pub initrd: Option<PathBuf>,
    /// The kernel command line, or None for each VMM's default.
    pub cmdline: Option<String>,
}

/// The VM's size, the same for every VMM.
#[derive(Debug, Clone, Copy)]
pub struct MachineSize {
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub cpus: u8,
}

/// A running vmd on its own control socket, stopped when dropped.
pub struct Vmd {
    child: Child,
    vmctl: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Vmd {
    /// Starts `BIN_DIR/vmd -d -s WORK_DIR/vmd.sock`, logging to
    /// WORK_DIR/vmd.log, and waits until it responds to `vmctl status`.
    pub fn start(bin_dir: &Path, work_dir: &Path) -> Result<Vmd, String> {
        let socket = work_dir.join("vmd.sock");
        let log = work_dir.join("vmd.log");
        let log_file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let vmd = bin_dir.join("vmd");
        let child = Command::new(&vmd)
            .arg("-d")
            .arg("-s")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", vmd.display()))?;
        let daemon = Vmd {
            child,
            vmctl: bin_dir.join("vmctl"),
            socket,
            log,
        };

        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            // With no VM, vmctl status prints only the table header and,
            // as on OpenBSD, exits 1.
            if let Ok(output) = daemon.vmctl(&["status"])
                && output.stdout.starts_with(b"   ID")
            {
                return Ok(daemon);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "vmd did not respond on {} within 30 s; its log:\n{}",
            daemon.socket.display(),
            daemon.log_text()
        ))
    }

    /// Runs vmctl with `args` against this daemon and waits for it.
    pub fn vmctl(&self, args: &[&str]) -> Result<std::process::Output, String> {
        Command::new(&self.vmctl)
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.vmctl.display()))
    }

    /// Returns the PID of the vm process of the running VM `name`, from
    /// `vmctl status`.
    pub fn vm_pid(&self, name: &str) -> Result<u32, String> {
        let output = self.vmctl(&["status", name])?;
        let table = String::from_utf8_lossy(&output.stdout);
        let pid = table
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|words| words.last() == Some(&name) && words.contains(&"running"))
            .and_then(|words| words.get(1)?.parse().ok());
        pid.ok_or_else(|| format!("vmctl status shows no running VM {name}:\n{table}"))
    }

    /// Returns the resident size of vmd's own processes (the parent and its
    /// children: control and vmm, and any vm processes), in KiB.
    pub fn daemon_rss_kib(&self) -> Result<u64, String> {
        let parent = self.child.id();
        let mut total = rss_kib(parent)?;
        for pid in children(parent)? {
            total += rss_kib(pid)?;
        }
        Ok(total)
    }

    /// vmd's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Vmd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// How to start and stop VMs of one kind.
pub enum Launcher<'a> {
    /// vmd, through its vmctl.
    Vmd(&'a Vmd),
    /// QEMU with a machine type.
    Qemu {
        /// qemu-system-x86_64.
        binary: &'a Path,
        /// `-M` value: microvm or pc.
        machine: &'static str,
        /// `-cpu` value.
        cpu: &'a str,
    },
}

impl Launcher<'_> {
    /// Builds the command that starts the VM with its console on stdout.
    /// `vm_name` names it under vmd.
    pub fn command(&self, vm_name: &str, boot: &BootFiles, size: MachineSize) -> Command {
        match self {
            Launcher::Vmd(vmd) => {
                let mut command = Command::new(&vmd.vmctl);
                command
                    .arg("-s")
                    .arg(&vmd.socket)
                    .args(["start", vm_name, "-b"])
                    .arg(&boot.kernel);
                if let Some(initrd) = &boot.initrd {
                    command.arg("--initrd").arg(initrd);
                }
                if let Some(cmdline) = &boot.cmdline {
                    command.arg("--cmdline").arg(cmdline);
                }
                command
                    .arg("-m")
                    .arg(format!("{}M", size.memory_mib))
                    .arg("-p")
                    .arg(size.cpus.to_string())
                    .arg("-c");
                command
            }
            Launcher::Qemu {
                binary,
                machine,
                cpu,
            } => {
                let mut command = Command::new(binary);
                command
                    .args(["-M", machine, "-enable-kvm", "-cpu", cpu])
                    .args(["-nodefaults", "-no-user-config", "-display", "none"])
                    .args(["-serial", "stdio"])
                    .arg("-m")
                    .arg(format!("{}M", size.memory_mib))
                    .arg("-smp")
                    .arg(size.cpus.to_string())
                    .arg("-kernel")
                    .arg(&boot.kernel);
                if let Some(initrd) = &boot.initrd {
                    command.arg("-initrd").arg(initrd);
                }
                if let Some(cmdline) = &boot.cmdline {
                    command.arg("-append").arg(cmdline);
                }
                command
            }
        }
    }

    /// Returns the PID of the process that runs the guest. `child` is the process
    /// [`Launcher::command`] started.
    pub fn vm_pid(&self, vm_name: &str, child: &Child) -> Result<u32, String> {
        match self {
            Launcher::Vmd(vmd) => vmd.vm_pid(vm_name),
            Launcher::Qemu { .. } => Ok(child.id()),
        }
    }

    /// Returns the rule that finds the guest RAM mapping in that process's
    /// smaps.
    pub fn guest_ram(&self, size: MachineSize) -> GuestRam<'static> {
        match self {
            Launcher::Vmd(_) => GuestRam::Path(VMD_GUEST_RAM_PATH),
            Launcher::Qemu { .. } => GuestRam::AnonymousOfSize(size.memory_mib * 1024),
        }
    }

    /// Ends the VM at once: `vmctl stop -f` under vmd (after which the
    /// `vmctl start -c` child ends by itself), SIGKILL for QEMU.
    pub fn stop(&self, vm_name: &str, child: &mut Child) -> Result<(), String> {
        match self {
            Launcher::Vmd(vmd) => {
                let output = vmd.vmctl(&["stop", "-f", vm_name])?;
                if !output.status.success() {
                    return Err(format!(
                        "vmctl stop -f {vm_name}: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    ));
                }
                Ok(())
            }
            Launcher::Qemu { .. } => child
                .kill()
                .map_err(|e| format!("cannot kill QEMU (pid {}): {e}", child.id())),
        }
    }
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{path}: no VmRSS line"))
}

// Lists every descendant of `parent`, found through the PPid of each
// process.
fn children(parent: u32) -> Result<Vec<u32>, String> {
    let mut parents_of = Vec::new();
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let ppid = status
            .lines()
            .find_map(|line| line.strip_prefix("PPid:"))
            .and_then(|value| value.trim().parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents_of.push((pid, ppid));
        }
    }
    let mut found = vec![parent];
    let mut index = 0;
    while index < found.len() {
        let current = found[index];
        found.extend(
            parents_of
                .iter()
                .filter(|(_, ppid)| *ppid == current)
                .map(|(pid, _)| *pid),
        );
        index += 1;
    }
    found.remove(0);
    Ok(found)
}

//! One measurement: start a VM, time its console until a marker, read the
//! VM process's memory at that moment, then stop the VM.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::smaps::{self, Mapping, Resident};
use crate::vmms::{BootFiles, Launcher, MachineSize};

/// How long a stopped VM's console may take to end.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The maximum console output kept for error messages, in bytes.
const CONSOLE_TAIL_BYTES: usize = 4096;

/// The figures of one boot.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    /// From launching the start command to the marker on its stdout.
    pub boot: Duration,
    /// The VM process's memory when the marker arrived.
    pub memory: Resident,
}

/// The parameters of one boot: the VM, the marker it waits for and a
/// directory for files.
pub struct Plan<'a> {
    /// The VM's name under vmd. vmd refuses a fourth start of one VM
    /// within 6 s of the previous one, as OpenBSD's vmd does, so each
    /// boot takes a new name.
    pub vm_name: &'a str,
    /// The VM to boot.
    pub boot: &'a BootFiles,
    /// Its memory and vCPUs.
    pub size: MachineSize,
    /// The bytes on the console that end the timing.
    pub marker: &'a [u8],
    /// How long to wait for the marker.
    pub timeout: Duration,
    /// A directory for the VMM's stderr.
    pub work_dir: &'a Path,
}

/// Boots `plan.boot` with `launcher` and measures it. With
/// `mappings_out`, also returns the mappings read at the marker.
pub fn measure(
    launcher: &Launcher,
    plan: &Plan,
    mappings_out: Option<&mut Vec<Mapping>>,
) -> Result<Measurement, String> {
    let stderr_path = plan.work_dir.join("vmm.stderr");
    let stderr =
        File::create(&stderr_path).map_err(|e| format!("{}: {e}", stderr_path.display()))?;
    let mut command = launcher.command(plan.vm_name, plan.boot, plan.size);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);

    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    let mut console = child.stdout.take().expect("stdout is piped");
    let result = wait_for_marker(&mut console, plan.marker, start + plan.timeout)
        .map(|at| at - start)
        .and_then(|boot| {
            let pid = launcher.vm_pid(plan.vm_name, &child)?;
            let mappings = smaps::read(pid)?;
            let memory = smaps::resident(&mappings, launcher.guest_ram(plan.size))?;
            if let Some(out) = mappings_out {
                *out = mappings;
            }
            Ok(Measurement { boot, memory })
        });

    let stopped = stop(launcher, plan.vm_name, &mut child, console);
    let stderr_text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    match (result, stopped) {
        (Ok(measurement), Ok(())) => Ok(measurement),
        (Err(e), _) | (Ok(_), Err(e)) => Err(format!("{e}\nVMM stderr:\n{stderr_text}")),
    }
}

// Reads the console until `marker` appears; returns when it was read.
fn wait_for_marker(
    console: &mut ChildStdout,
    marker: &[u8],
    deadline: Instant,
) -> Result<Instant, String> {
    let mut seen: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "timed out waiting for {:?} on the console; its last output:\n{}",
                String::from_utf8_lossy(marker),
                String::from_utf8_lossy(&seen)
            ));
        }
        let timeout = PollTimeout::try_from(left.as_millis().min(60_000) as u32)
            .expect("at most 60000 ms fits a poll timeout");
        let mut fds = [PollFd::new(console.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll on the console: {e}")),
        }
        let count = console
            .read(&mut buffer)
            .map_err(|e| format!("reading the console: {e}"))?;
        let now = Instant::now();
        if count == 0 {
            return Err(format!(
                "the console ended before {:?}; its last output:\n{}",
                String::from_utf8_lossy(marker),
                String::from_utf8_lossy(&seen)
            ));
        }
        seen.extend_from_slice(&buffer[..count]);
        if seen.windows(marker.len()).any(|window| window == marker) {
            return Ok(now);
        }
        // The tail kept is longer than any marker, so a marker split
        // across two reads is still found.
        if seen.len() > CONSOLE_TAIL_BYTES {
            seen.drain(..seen.len() - CONSOLE_TAIL_BYTES);
        }
    }
}

// Stops the VM, then reads the console to its end and reaps the child.
fn stop(
    launcher: &Launcher,
    vm_name: &str,
    child: &mut Child,
    mut console: ChildStdout,
) -> Result<(), String> {
    let stopped = launcher.stop(vm_name, child);
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut buffer = [0u8; 4096];
    let drained = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(left.as_millis().min(60_000) as u32)
            .expect("at most 60000 ms fits a poll timeout");
        let mut fds = [PollFd::new(console.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => break Err("the console did not end after the VM was stopped".to_string()),
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => break Err(format!("poll on the console: {e}")),
        }
        match console.read(&mut buffer) {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(format!("reading the console: {e}")),
        }
    };
    if drained.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    stopped.and(drained)
}

//! The vm process: runs one guest with the descriptors it was handed and
//! reports to the vmm process how the guest ended. It opens no files.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use std::path::PathBuf;

use disk::{Access, Chain, ChainFile, Disk};
use proto::{
    Channel, DiskFormat, ErrorCode, ErrorReply, Received, VmExitReason, VmSpec, VmToVmm, VmmToVm,
    error_chain, start_fds,
};
use vmm::{
    ConsoleConfig, ConsoleOutput, DiskConfig, ResetCause, Vm, VmConfig, VmController, VmExit,
};

/// Exit status of a vm process whose guest powered off.
pub const EXIT_POWER_OFF: i32 = 0;
/// Exit status of a vm process that failed.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status of a vm process whose guest rebooted.
pub const EXIT_REBOOT: i32 = 2;
/// Exit status of a vm process stopped on request.
pub const EXIT_STOPPED: i32 = 3;

/// Runs the vm role; returns the process exit status.
pub fn main() -> i32 {
    let channel = match crate::privsep::inherited_channel() {
        Ok(channel) => Arc::new(channel),
        Err(e) => {
            log::error!("cannot take the vmm channel: {e}");
            return EXIT_FAILURE;
        }
    };
    let (spec, fds) = match channel.recv::<VmmToVm>() {
        Ok(Some(Received {
            message: VmmToVm::Start(spec),
            fds,
            ..
        })) => (spec, fds),
        Ok(Some(other)) => {
            log::error!("expected a start message, got {:?}", other.message);
            return EXIT_FAILURE;
        }
        Ok(None) => return EXIT_FAILURE,
        Err(e) => {
            log::error!("cannot read the start message: {e}");
            return EXIT_FAILURE;
        }
    };
    crate::logger::set_prefix(&format!("vm/{}", spec.name));

    let vm = match build(&spec, fds) {
        Ok(vm) => vm,
        Err(detail) => {
            log::error!("cannot start: {detail}");
            let reply = ErrorReply::new(ErrorCode::START_FAILED, detail);
            let _ = channel.send(spec.id, &VmToVmm::StartFailed(reply), &[]);
            return EXIT_FAILURE;
        }
    };
    let controller = vm.controller();
    if channel.send(spec.id, &VmToVmm::Running, &[]).is_err() {
        return EXIT_FAILURE;
    }
    listen_for_requests(channel.clone(), controller);

    let (reason, code) = match vm.run() {
        Ok(VmExit::PowerOff) => (VmExitReason::PowerOff, EXIT_POWER_OFF),
        Ok(VmExit::Reset(cause)) => {
            log::info!("guest reset ({})", reset_cause_text(cause));
            (VmExitReason::Reboot, EXIT_REBOOT)
        }
        Ok(VmExit::Stopped) => (VmExitReason::Stopped, EXIT_STOPPED),
        Ok(VmExit::Fatal(message)) => {
            log::error!("{message}");
            (VmExitReason::Failed(message), EXIT_FAILURE)
        }
        Err(e) => {
            let message = error_chain(&e);
            log::error!("{message}");
            (VmExitReason::Failed(message), EXIT_FAILURE)
        }
    };
    let _ = channel.send(spec.id, &VmToVmm::Exiting(reason), &[]);
    code
}

fn reset_cause_text(cause: ResetCause) -> &'static str {
    match cause {
        ResetCause::Keyboard => "keyboard controller",
        ResetCause::AcpiResetRegister => "ACPI reset register",
        ResetCause::TripleFault => "triple fault",
    }
}

fn build(spec: &VmSpec, fds: Vec<OwnedFd>) -> Result<Vm, String> {
    let disk_files: usize = spec.disks.iter().map(|disk| disk.files.len()).sum();
    let expected = start_fds::INITRD + usize::from(spec.has_initrd) + disk_files;
    if fds.len() != expected {
        return Err(format!(
            "expected {expected} descriptors from vmm, got {}",
            fds.len()
        ));
    }
    let mut fds = fds.into_iter();
    let mut next = || fds.next().expect("the count was checked");
    let kvm = vmm::kvm_from_fd(next());
    let console = File::from(next());
    let kernel = File::from(next());
    let initrd = spec.has_initrd.then(|| File::from(next()));
    let mut disks = Vec::with_capacity(spec.disks.len());
    for (index, disk_spec) in spec.disks.iter().enumerate() {
        let files = disk_spec
            .files
            .iter()
            .map(|file| ChainFile {
                path: PathBuf::from(&file.path),
                format: match file.format {
                    DiskFormat::Raw => disk::Format::Raw,
                    DiskFormat::Qcow2 => disk::Format::Qcow2,
                },
                file: File::from(next()),
            })
            .collect();
        let access = if disk_spec.read_only {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        };
        let disk = Disk::from_chain(Chain { access, files }).map_err(|e| error_chain(&e))?;
        disks.push(DiskConfig {
            disk: Arc::new(disk),
            serial: format!("vmd-{}-{index}", spec.id),
        });
    }
    let console_input = console
        .try_clone()
        .map_err(|e| format!("cannot duplicate the console: {e}"))?;

    let config = VmConfig {
        name: spec.name.clone(),
        memory_bytes: spec.memory_bytes,
        vcpus: spec.vcpus,
        kernel,
        initrd,
        cmdline: spec.cmdline.clone(),
        console: ConsoleConfig {
            output: ConsoleOutput::File(console),
            input: Some(console_input),
        },
        disks,
    };
    Vm::new(&kvm, config).map_err(|e| error_chain(&e))
}

// Shutdown requests arrive while the vCPUs run, so a thread waits for
// them. A guest that does not handle the power button (no ACPI OS, or not
// booted far enough) is stopped at once, as OpenBSD's vmd does for a guest
// without its vmmci driver.
fn listen_for_requests(channel: Arc<Channel>, controller: VmController) {
    let spawned = std::thread::Builder::new()
        .stack_size(vmm::HELPER_STACK_BYTES)
        .name("vmm-channel".into())
        .spawn(move || {
            loop {
                match channel.recv::<VmmToVm>() {
                    Ok(Some(Received {
                        message: VmmToVm::Shutdown,
                        ..
                    })) => {
                        if controller.press_power_button() {
                            log::info!("power button pressed");
                        } else {
                            log::info!("guest ignores the power button; stopping");
                            controller.stop();
                        }
                    }
                    Ok(Some(other)) => {
                        log::warn!("unexpected message from vmm: {:?}", other.message);
                    }
                    Ok(None) | Err(_) => {
                        // vmm is gone: nobody could stop this VM any more.
                        controller.stop();
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the request thread: {e}");
    }
}

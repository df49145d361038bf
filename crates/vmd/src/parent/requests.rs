//! What the parent does with each client request.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use proto::{
    ControlRequest, ControlResponse, Credentials, ErrorCode, ErrorReply, ParentToVmm, StartRequest,
    StopRequest, VmSpec, VmState, VmStatus,
};

use super::Parent;
use super::console::Console;
use super::registry::{Lifecycle, Origin, VmEntry, WaitKind};

/// Memory of a VM when neither vm.conf nor vmctl sets it (512M).
const DEFAULT_MEMORY_BYTES: u64 = 512 << 20;
/// Kernel command line when none is given: the console on COM1.
const DEFAULT_CMDLINE: &str = "console=ttyS0";
/// A VM started again sooner than this after its previous start counts
/// as a quick restart (OpenBSD's VM_START_RATE_SEC).
const START_RATE: Duration = Duration::from_secs(6);
/// Quick restarts allowed in a row (OpenBSD's VM_START_RATE_LIMIT).
const START_RATE_LIMIT: u32 = 3;
const KVM_DEVICE: &str = "/dev/kvm";

impl Parent {
    /// Handles one request from control client `client`.
    pub(super) fn handle_request(
        &mut self,
        client: u32,
        credentials: Credentials,
        request: ControlRequest,
        fds: Vec<OwnedFd>,
    ) {
        let result = match request {
            ControlRequest::Start(start) => self.start_request(client, credentials, start, fds),
            ControlRequest::Stop(stop) => self.stop_request(client, credentials, stop),
            ControlRequest::Status => {
                self.status_request(client);
                Ok(())
            }
        };
        if let Err(error) = result {
            self.reply(client, ControlResponse::Error(error));
        }
    }

    fn start_request(
        &mut self,
        client: u32,
        credentials: Credentials,
        request: StartRequest,
        fds: Vec<OwnedFd>,
    ) -> Result<(), ErrorReply> {
        if let Err(e) = proto::check_vm_name(&request.name) {
            return Err(ErrorReply::new(ErrorCode::INVALID, e.to_string()));
        }
        let expected_fds =
            usize::from(request.kernel.is_some()) + usize::from(request.initrd.is_some());
        if fds.len() != expected_fds {
            return Err(ErrorReply::new(
                ErrorCode::INVALID,
                format!(
                    "request carries {} files, expected {expected_fds}",
                    fds.len()
                ),
            ));
        }
        let mut fds = fds.into_iter();
        let kernel = request.kernel.as_ref().and(fds.next()).map(File::from);
        let initrd = request.initrd.as_ref().and(fds.next()).map(File::from);
        let has_options = request.memory_bytes.is_some()
            || request.vcpus.is_some()
            || request.initrd.is_some()
            || request.cmdline.is_some();

        let id = match self.registry.find_name(&request.name) {
            Some(id) => {
                let vm = self.registry.get_mut(id).expect("found by name");
                if vm.lifecycle != Lifecycle::Stopped {
                    return Err(ErrorReply::new(ErrorCode::ALREADY, ""));
                }
                if credentials.uid != 0 && credentials.uid != vm.uid {
                    return Err(ErrorReply::new(ErrorCode::NOT_PERMITTED, ""));
                }
                // A VM that vmctl created is redefined by a new start with
                // options; OpenBSD would have forgotten it when it stopped.
                if has_options || kernel.is_some() {
                    update_entry(vm, &request, kernel, initrd);
                }
                id
            }
            None => {
                if credentials.uid != 0 {
                    return Err(ErrorReply::new(ErrorCode::NOT_PERMITTED, ""));
                }
                if kernel.is_none() {
                    let code = if has_options {
                        ErrorCode::INVALID
                    } else {
                        ErrorCode::DISK_MISSING
                    };
                    return Err(ErrorReply::new(code, "no kernel or disk/cdrom specified"));
                }
                let id = self.registry.claim_id(&request.name, credentials.uid);
                let mut vm = VmEntry {
                    origin: Origin::Vmctl,
                    id,
                    name: request.name.clone(),
                    uid: credentials.uid,
                    memory_bytes: DEFAULT_MEMORY_BYTES,
                    vcpus: 1,
                    kernel: None,
                    initrd: None,
                    cmdline: DEFAULT_CMDLINE.to_string(),
                    lifecycle: Lifecycle::Stopped,
                    pid: None,
                    console: None,
                    waiters: Vec::new(),
                    last_start: None,
                    quick_starts: 0,
                };
                update_entry(&mut vm, &request, kernel, initrd);
                self.registry.insert(vm);
                id
            }
        };

        self.start_vm(id)?;
        let vm = self.registry.get_mut(id).expect("started above");
        vm.waiters.push((client, WaitKind::Start));
        Ok(())
    }

    /// Opens what VM `id` needs and asks vmm to start it.
    pub(super) fn start_vm(&mut self, id: u32) -> Result<(), ErrorReply> {
        let vm = self
            .registry
            .get_mut(id)
            .expect("the caller checked the id");
        let now = Instant::now();
        if vm
            .last_start
            .is_some_and(|last| now.duration_since(last) < START_RATE)
        {
            vm.quick_starts += 1;
            if vm.quick_starts > START_RATE_LIMIT {
                log::warn!("vm {}: restarted too quickly", vm.name);
                return Err(ErrorReply::new(
                    ErrorCode::NOT_PERMITTED,
                    "restarted too quickly",
                ));
            }
        } else {
            vm.quick_starts = 0;
        }

        let Some(kernel) = vm.kernel.as_ref() else {
            return Err(ErrorReply::new(ErrorCode::BIOS_MISSING, ""));
        };
        let kvm = File::options()
            .read(true)
            .write(true)
            .open(KVM_DEVICE)
            .map_err(|e| {
                ErrorReply::new(
                    ErrorCode::from_io(&e),
                    format!("{KVM_DEVICE}: {}", io_error_text(&e)),
                )
            })?;
        if vm.console.is_none() {
            let console = Console::open(vm.uid).map_err(|e| {
                ErrorReply::new(
                    ErrorCode(e as i32),
                    format!("cannot open a console pty: {e}"),
                )
            })?;
            vm.console = Some(console);
        }
        let console = vm.console.as_ref().expect("opened above");

        let mut fds = vec![kvm.as_fd(), console.master.as_fd(), kernel.as_fd()];
        if let Some(initrd) = vm.initrd.as_ref() {
            fds.push(initrd.as_fd());
        }
        let spec = VmSpec {
            id,
            name: vm.name.clone(),
            memory_bytes: vm.memory_bytes,
            vcpus: vm.vcpus,
            cmdline: vm.cmdline.clone(),
            has_initrd: vm.initrd.is_some(),
        };
        self.vmm
            .send(id, &ParentToVmm::StartVm(spec), &fds)
            .map_err(|e| ErrorReply::new(ErrorCode(5), format!("cannot reach vmm: {e}")))?;
        let vm = self
            .registry
            .get_mut(id)
            .expect("the caller checked the id");
        vm.lifecycle = Lifecycle::Starting;
        vm.last_start = Some(now);
        Ok(())
    }

    fn stop_request(
        &mut self,
        client: u32,
        credentials: Credentials,
        request: StopRequest,
    ) -> Result<(), ErrorReply> {
        let id = self
            .registry
            .find(&request.target)
            .ok_or_else(|| ErrorReply::new(ErrorCode::NOT_FOUND, ""))?;
        let vm = self.registry.get_mut(id).expect("found above");
        if credentials.uid != 0 && credentials.uid != vm.uid {
            return Err(ErrorReply::new(ErrorCode::NOT_PERMITTED, ""));
        }
        match vm.lifecycle {
            Lifecycle::Stopped => return Err(ErrorReply::new(ErrorCode::INVALID, "")),
            Lifecycle::Stopping if !request.force => {
                return Err(ErrorReply::new(ErrorCode::ALREADY, ""));
            }
            _ => {}
        }
        if request.force {
            vm.waiters.push((client, WaitKind::ForceTerminate));
        } else if request.wait {
            vm.waiters.push((client, WaitKind::Terminate));
        }
        self.request_stop(id, request.force);
        if !request.force && !request.wait {
            self.reply(client, ControlResponse::StopRequested { id });
        }
        Ok(())
    }

    /// Asks vmm to stop VM `id`: through the guest, or at once with `force`.
    pub(super) fn request_stop(&mut self, id: u32, force: bool) {
        let Some(vm) = self.registry.get_mut(id) else {
            return;
        };
        vm.lifecycle = Lifecycle::Stopping;
        log::info!(
            "vm {}: stopping{}",
            vm.name,
            if force { " (forced)" } else { "" }
        );
        if let Err(e) = self.vmm.send(id, &ParentToVmm::StopVm { id, force }, &[]) {
            log::error!("cannot reach vmm: {e}");
        }
    }

    fn status_request(&self, client: u32) {
        for vm in self.registry.iter() {
            let running = vm.lifecycle != Lifecycle::Stopped;
            let state = match vm.lifecycle {
                Lifecycle::Stopped => VmState::Stopped,
                Lifecycle::Stopping => VmState::Stopping,
                Lifecycle::Starting | Lifecycle::Running => VmState::Running,
            };
            let status = VmStatus {
                id: vm.id,
                pid: vm.pid.filter(|_| running),
                vcpus: vm.vcpus,
                memory_bytes: vm.memory_bytes,
                used_bytes: vm.pid.filter(|_| running).and_then(resident_bytes),
                tty: vm
                    .console
                    .as_ref()
                    .filter(|_| running)
                    .map(|c| c.path.clone()),
                owner_user: user_name(vm.uid),
                owner_group: None,
                state,
                name: vm.name.clone(),
            };
            self.reply(client, ControlResponse::Status(status));
        }
        self.reply(client, ControlResponse::StatusEnd);
    }
}

/// The text of an I/O error without Rust's " (os error N)" suffix.
fn io_error_text(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(errno) => nix::Error::from_raw(errno).desc().to_string(),
        None => error.to_string(),
    }
}

fn update_entry(
    vm: &mut VmEntry,
    request: &StartRequest,
    kernel: Option<File>,
    initrd: Option<File>,
) {
    if let Some(memory_bytes) = request.memory_bytes {
        vm.memory_bytes = memory_bytes;
    }
    if let Some(vcpus) = request.vcpus {
        vm.vcpus = vcpus;
    }
    if kernel.is_some() {
        vm.kernel = kernel;
        // A new kernel comes with its own initrd or none.
        vm.initrd = None;
    }
    if initrd.is_some() {
        vm.initrd = initrd;
    }
    if let Some(cmdline) = &request.cmdline {
        vm.cmdline = cmdline.clone();
    }
}

// Resident memory of a vm process, from /proc/PID/statm (second field,
// in pages).
fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page_size = rustix::param::page_size() as u64;
    Some(pages * page_size)
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

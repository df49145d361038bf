//! The parent's handling of each client request.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use proto::{
    ChainFileSpec, ControlRequest, ControlResponse, Credentials, DiskFormat, DiskSpec, ErrorCode,
    ErrorReply, ParentToVmm, StartRequest, StopRequest, VmSpec, VmState, VmStatus,
};

use super::Parent;
use super::console::Console;
use super::registry::{
    DiskDefinition, FileSource, Lifecycle, Origin, Owner, VmDefinition, VmEntry, WaitKind,
};

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
        if self.shutdown_deadline.is_some() {
            return Err(ErrorReply::new(ErrorCode::BUSY, "vmd is shutting down"));
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
        let has_options = request.has_options();

        let (id, created) = match self.registry.find_name(&request.name) {
            Some(id) => {
                let vm = self.registry.get_mut(id).expect("found by name");
                if vm.lifecycle != Lifecycle::Stopped {
                    return Err(ErrorReply::new(ErrorCode::ALREADY, ""));
                }
                if !may_control(credentials, vm.definition.owner) {
                    return Err(ErrorReply::new(ErrorCode::NOT_PERMITTED, ""));
                }
                match vm.definition.origin {
                    // A VM from vm.conf starts as configured, with at most
                    // a different kernel for this start.
                    Origin::Config if has_options => {
                        return Err(ErrorReply::new(ErrorCode::ALREADY, ""));
                    }
                    Origin::Config => vm.kernel_override = kernel,
                    // A VM that vmctl defined is redefined by a new start
                    // with options; OpenBSD would have forgotten it already.
                    Origin::Vmctl => {
                        update_definition(&mut vm.definition, &request, kernel, initrd)
                    }
                }
                vm.uid = credentials.uid;
                (id, false)
            }
            None => {
                if credentials.uid != 0 {
                    return Err(ErrorReply::new(ErrorCode::NOT_PERMITTED, ""));
                }
                if request.disks.len() > vmm::MAX_DISKS {
                    return Err(ErrorReply::new(ErrorCode::INVALID, "too many disks"));
                }
                if kernel.is_none() {
                    // OpenBSD's replies: a bare unknown name has no devices
                    // at all ("could not open disk image(s)" in vmctl).
                    if has_options {
                        return Err(ErrorReply::new(
                            ErrorCode::INVALID,
                            "no kernel or disk/cdrom specified",
                        ));
                    }
                    log::warn!("vm {}: invalid configuration, no devices", request.name);
                    return Err(ErrorReply::new(ErrorCode::DISK_MISSING, ""));
                }
                let id = self.registry.claim_id(&request.name, credentials.uid);
                let mut definition = VmDefinition {
                    origin: Origin::Vmctl,
                    memory_bytes: vmconf::DEFAULT_MEMORY_BYTES,
                    vcpus: vmconf::DEFAULT_CPUS,
                    kernel: None,
                    initrd: None,
                    cmdline: super::config::DEFAULT_CMDLINE.to_string(),
                    owner: Owner {
                        uid: credentials.uid,
                        gid: None,
                    },
                    enabled: true,
                    disks: Vec::new(),
                    unsupported: None,
                };
                update_definition(&mut definition, &request, kernel, initrd);
                self.registry
                    .insert(VmEntry::new(id, request.name.clone(), definition));
                (id, true)
            }
        };

        // Starting by hand takes the VM out of the staggered start queue.
        self.staggered.remove(id);
        if let Err(error) = self.start_vm(id) {
            // A VM this request defined, and that never came up, is
            // forgotten; one that existed before keeps its id and its
            // restart count.
            if created {
                self.registry.remove(id);
            }
            return Err(error);
        }
        let vm = self.registry.get_mut(id).expect("started above");
        vm.waiters.push((client, WaitKind::Start));
        Ok(())
    }

    /// Opens the files VM `id` needs and sends vmm the request to start it.
    pub(super) fn start_vm(&mut self, id: u32) -> Result<(), ErrorReply> {
        let vm = self
            .registry
            .get_mut(id)
            .expect("the caller checked the id");
        if let Some(reason) = &vm.definition.unsupported {
            return Err(ErrorReply::new(ErrorCode::INVALID, reason.clone()));
        }
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

        let kernel = match (&vm.kernel_override, &vm.definition.kernel) {
            (Some(file), _) => BootFile::Borrowed(file),
            (None, Some(source)) => open_source(source, "kernel", ErrorCode::BIOS_MISSING)?,
            (None, None) => return Err(ErrorReply::new(ErrorCode::BIOS_MISSING, "")),
        };
        let initrd = match (&vm.kernel_override, &vm.definition.initrd) {
            // A kernel given for one start comes without the configured
            // initrd, which belongs to the configured kernel.
            (Some(_), _) | (None, None) => None,
            (None, Some(source)) => Some(open_source(source, "initrd", ErrorCode::BIOS_MISSING)?),
        };
        let kvm = File::options()
            .read(true)
            .write(true)
            .open(KVM_DEVICE)
            .map_err(|e| {
                ErrorReply::new(
                    ErrorCode::from_io(&e),
                    format!("{KVM_DEVICE}: {}", proto::error_chain(&e)),
                )
            })?;
        if vm.console.is_none() {
            let console = Console::open(vm.uid, vm.definition.owner.gid).map_err(|e| {
                ErrorReply::new(
                    ErrorCode(e as i32),
                    format!("cannot open a console pty: {}", e.desc()),
                )
            })?;
            vm.console = Some(console);
        }
        let console = vm.console.as_ref().expect("opened above");

        // The chains are opened here, as root, and handed over open: the
        // vm process cannot open files. Each top image carries its lock.
        // The same image twice would otherwise fail on its own lock, with
        // a message that blames another process.
        let mut seen = Vec::with_capacity(vm.definition.disks.len());
        for definition in &vm.definition.disks {
            let Ok(metadata) = std::fs::metadata(&definition.path) else {
                continue;
            };
            let identity = (metadata.dev(), metadata.ino());
            if seen.contains(&identity) {
                return Err(ErrorReply::new(
                    ErrorCode::INVALID,
                    format!("disk {}: attached twice", definition.path.display()),
                ));
            }
            seen.push(identity);
        }
        let mut chains = Vec::with_capacity(vm.definition.disks.len());
        for definition in &vm.definition.disks {
            chains.push(open_disk(definition)?);
        }

        let mut fds = vec![kvm.as_fd(), console.master.as_fd(), kernel.as_fd()];
        if let Some(initrd) = initrd.as_ref() {
            fds.push(initrd.as_fd());
        }
        let mut disks = Vec::with_capacity(chains.len());
        for chain in &chains {
            let mut files = Vec::with_capacity(chain.files.len());
            for file in &chain.files {
                fds.push(file.file.as_fd());
                files.push(ChainFileSpec {
                    path: file.path.display().to_string(),
                    format: match file.format {
                        disk::Format::Raw => DiskFormat::Raw,
                        disk::Format::Qcow2 => DiskFormat::Qcow2,
                    },
                });
            }
            disks.push(DiskSpec {
                files,
                read_only: chain.access == disk::Access::ReadOnly,
            });
        }
        let spec = VmSpec {
            id,
            name: vm.name.clone(),
            memory_bytes: vm.definition.memory_bytes,
            vcpus: vm.definition.vcpus,
            cmdline: vm.definition.cmdline.clone(),
            has_initrd: initrd.is_some(),
            disks,
        };
        self.vmm
            .send(id, &ParentToVmm::StartVm(spec), &fds)
            .map_err(|e| ErrorReply::new(ErrorCode(5), format!("cannot reach vmm: {e}")))?;
        drop(fds);
        drop(chains);
        drop(kernel);
        drop(initrd);
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
        if !may_control(credentials, vm.definition.owner) && credentials.uid != vm.uid {
            return Err(ErrorReply::new(ErrorCode::NOT_PERMITTED, ""));
        }
        if self.staggered.contains(id) {
            // Still waiting for its staggered start: it just never starts.
            self.staggered.remove(id);
            let reply = match (request.force, request.wait) {
                (true, _) => ControlResponse::ForceTerminated { id },
                (false, true) => ControlResponse::Terminated { id },
                (false, false) => ControlResponse::StopRequested { id },
            };
            self.reply(client, reply);
            return Ok(());
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
        // Most VMs share an owner, so each name is looked up once.
        let mut users = HashMap::new();
        let mut groups = HashMap::new();
        for vm in self.registry.iter() {
            let running = vm.lifecycle != Lifecycle::Stopped;
            let state = match vm.lifecycle {
                Lifecycle::Stopped if self.staggered.contains(vm.id) => VmState::Waiting,
                Lifecycle::Stopped if !vm.definition.enabled => VmState::Disabled,
                Lifecycle::Stopped => VmState::Stopped,
                Lifecycle::Stopping => VmState::Stopping,
                Lifecycle::Starting | Lifecycle::Running => VmState::Running,
            };
            // The starter while running, the configured owner otherwise.
            let (owner_uid, owner_gid) = if running {
                (vm.uid, vm.definition.owner.gid)
            } else {
                (vm.definition.owner.uid, vm.definition.owner.gid)
            };
            let status = VmStatus {
                id: vm.id,
                pid: vm.pid.filter(|_| running),
                vcpus: vm.definition.vcpus,
                memory_bytes: vm.definition.memory_bytes,
                used_bytes: vm.pid.filter(|_| running).and_then(resident_bytes),
                tty: vm
                    .console
                    .as_ref()
                    .filter(|_| running)
                    .map(|c| c.path.clone()),
                owner_user: users
                    .entry(owner_uid)
                    .or_insert_with(|| user_name(owner_uid))
                    .clone(),
                owner_group: owner_gid
                    .map(|gid| groups.entry(gid).or_insert_with(|| group_name(gid)).clone()),
                state,
                name: vm.name.clone(),
            };
            self.reply(client, ControlResponse::Status(status));
        }
        self.reply(client, ControlResponse::StatusEnd);
    }
}

fn update_definition(
    definition: &mut VmDefinition,
    request: &StartRequest,
    kernel: Option<File>,
    initrd: Option<File>,
) {
    if let Some(memory_bytes) = request.memory_bytes {
        definition.memory_bytes = memory_bytes;
    }
    if let Some(vcpus) = request.vcpus {
        definition.vcpus = vcpus;
    }
    if let Some(kernel) = kernel {
        definition.kernel = Some(FileSource::Open(kernel));
        // A new kernel comes with its own initrd or none.
        definition.initrd = None;
    }
    if let Some(initrd) = initrd {
        definition.initrd = Some(FileSource::Open(initrd));
    }
    if let Some(cmdline) = &request.cmdline {
        definition.cmdline = cmdline.clone();
    }
    if !request.disks.is_empty() {
        definition.disks = request
            .disks
            .iter()
            .map(|disk| DiskDefinition {
                path: PathBuf::from(&disk.path),
                format: disk.format,
            })
            .collect();
    }
}

// Opens a disk and its backing chain read-write, the top image locked.
// The paths come from vm.conf, which root wrote, so they are not checked
// against the permissions of the user who starts the VM (as in OpenBSD).
fn open_disk(definition: &DiskDefinition) -> Result<disk::Chain, ErrorReply> {
    let format = definition.format.map(|format| match format {
        DiskFormat::Raw => disk::Format::Raw,
        DiskFormat::Qcow2 => disk::Format::Qcow2,
    });
    disk::open_chain(&definition.path, format, disk::Access::ReadWrite)
        .map_err(|e| ErrorReply::new(ErrorCode::DISK_MISSING, proto::error_chain(&e)))
}

/// Returns true when a client may start, stop or attach to a VM owned by
/// `owner`: root, the owning user, or a member of the owning group.
fn may_control(credentials: Credentials, owner: Owner) -> bool {
    if credentials.uid == 0 || credentials.uid == owner.uid {
        return true;
    }
    let Some(gid) = owner.gid else {
        return false;
    };
    if credentials.gid == gid {
        return true;
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(credentials.uid));
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid));
    match (user, group) {
        (Ok(Some(user)), Ok(Some(group))) => group.mem.contains(&user.name),
        _ => false,
    }
}

/// A boot file ready to pass: borrowed from the VM's definition, or opened
/// now from a configured path.
enum BootFile<'a> {
    Borrowed(&'a File),
    Opened(File),
}

impl BootFile<'_> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            BootFile::Borrowed(file) => file.as_fd(),
            BootFile::Opened(file) => file.as_fd(),
        }
    }
}

// Opens a configured path now (as root, on behalf of the configuration),
// or lends the file vmctl handed over. The open does not block, so a FIFO
// is refused instead of waiting for a writer.
fn open_source<'a>(
    source: &'a FileSource,
    what: &str,
    code: ErrorCode,
) -> Result<BootFile<'a>, ErrorReply> {
    let path = match source {
        FileSource::Open(file) => return Ok(BootFile::Borrowed(file)),
        FileSource::Path(path) => path,
    };
    let fail =
        |reason: String| ErrorReply::new(code, format!("{what} {}: {reason}", path.display()));
    let file = File::options()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| fail(proto::error_chain(&e)))?;
    match file.metadata() {
        Ok(metadata) if metadata.is_file() => Ok(BootFile::Opened(file)),
        Ok(_) => Err(fail("not a regular file".to_string())),
        Err(e) => Err(fail(proto::error_chain(&e))),
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

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(group)) => group.name,
        _ => gid.to_string(),
    }
}

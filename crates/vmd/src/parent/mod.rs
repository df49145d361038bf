//! The parent process: starts the control and vmm processes, keeps the
//! list of VMs, decides what each request does, and opens the files and
//! devices VMs need on behalf of the requesting user.

mod config;
mod console;
mod registry;
mod requests;

use std::os::fd::AsFd;
use std::process::Child;
use std::time::{Duration, Instant};

use nix::poll::PollTimeout;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use proto::{
    Channel, ControlResponse, ControlToParent, ParentToControl, Received, VmExitReason, VmmToParent,
};

use crate::privsep::{self, Role};
use registry::{Lifecycle, Origin, Registry, VmEntry, WaitKind};

/// How long vmd waits for guests to power off when it is stopped, before
/// it kills the rest.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The parent's state.
pub struct Parent {
    control: Channel,
    vmm: Channel,
    registry: Registry,
    staggered: config::StaggeredStart,
    shutdown_deadline: Option<Instant>,
}

/// Runs vmd; returns the process exit status.
pub fn main(flags: &crate::Flags) -> i32 {
    if flags.check_only {
        return check_config(flags);
    }
    if !nix::unistd::Uid::effective().is_root() {
        proto::reportln!("vmd: need root privileges");
        return 1;
    }
    // The configuration is read before vmd detaches, so that errors reach
    // the terminal.
    let loaded = match vmconf::load(flags.config.as_deref(), &flags.defines) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            for diagnostic in diagnostics {
                proto::reportln!("{diagnostic}");
            }
            return 1;
        }
    };
    for warning in &loaded.warnings {
        proto::reportln!("{warning}");
    }
    let owner = loaded.config.globals.socket_owner.as_ref();
    let socket = match crate::socket::ControlSocket::create(
        &flags.socket,
        owner.map_or(0, |owner| owner.value.uid()),
        owner.and_then(|owner| owner.value.gid()).unwrap_or(0),
    ) {
        Ok(socket) => socket,
        Err(e) => {
            proto::reportln!("vmd: control socket {}: {e}", flags.socket.display());
            return 1;
        }
    };
    if !flags.debug
        && let Err(e) = nix::unistd::daemon(false, false)
    {
        proto::reportln!("vmd: cannot become a daemon: {e}");
        return 1;
    }
    crate::logger::init("parent", flags.debug, flags.verbose);

    let signals = match block_signals() {
        Ok(signals) => signals,
        Err(e) => {
            log::error!("cannot set up signal handling: {e}");
            return 1;
        }
    };
    let mut args = vec!["-s".to_string(), flags.socket.display().to_string()];
    args.extend(flags.logging_args());
    let spawned = privsep::spawn(Role::Vmm, "vmd: vmm", &args, None).and_then(|vmm| {
        let control = privsep::spawn(
            Role::Control,
            "vmd: control",
            &args,
            Some(socket.listener.as_fd()),
        )?;
        Ok((vmm, control))
    });
    let ((mut vmm_child, vmm), (mut control_child, control)) = match spawned {
        Ok(children) => children,
        Err(e) => {
            log::error!("cannot start the vmd processes: {e}");
            return 1;
        }
    };
    log::info!("started, control socket {}", flags.socket.display());
    warn_about_small_pages();

    let mut parent = Parent {
        control,
        vmm,
        registry: Registry::default(),
        staggered: config::StaggeredStart::new(&loaded.config),
        shutdown_deadline: None,
    };
    parent.register_config(&loaded.config);
    let code = parent.run(&signals, &mut [&mut vmm_child, &mut control_child]);
    drop(parent);
    let _ = vmm_child.wait();
    let _ = control_child.wait();
    drop(socket);
    log::info!("exiting");
    code
}

const SHMEM_THP_SETTING: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

// Guest RAM is a memfd, which gets huge pages only when the host allows
// them for shared memory; with 4 KiB pages every first touch of guest
// memory is a fault, which slows guests down, most of all nested ones.
fn warn_about_small_pages() {
    let Ok(setting) = std::fs::read_to_string(SHMEM_THP_SETTING) else {
        return;
    };
    // The active choice is the word in brackets, e.g. "always [never]".
    if setting.contains("[never]") || setting.contains("[deny]") {
        log::info!(
            "guest memory uses 4 KiB pages; for faster guests, set {SHMEM_THP_SETTING} to advise"
        );
    }
}

fn check_config(flags: &crate::Flags) -> i32 {
    let report = vmconf::check(flags.config.as_deref(), &flags.defines, flags.verbose > 0);
    proto::report!("{}", report.text);
    if report.ok { 0 } else { 1 }
}

fn block_signals() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        mask.add(signal);
    }
    mask.thread_block()?;
    // SAFETY: ignoring SIGPIPE installs no handler code; writes to a closed
    // socket then fail with EPIPE, which every caller handles.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) }?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
}

enum Ready {
    Control,
    Vmm,
    Signals,
}

impl Parent {
    fn run(&mut self, signals: &SignalFd, children: &mut [&mut Child]) -> i32 {
        loop {
            if self.shutdown_deadline.is_some() && self.all_stopped() {
                return 0;
            }
            if self
                .shutdown_deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                log::warn!(
                    "guests still running after {} s; killing them",
                    SHUTDOWN_GRACE.as_secs()
                );
                return 0;
            }
            for id in self.staggered.take_due(Instant::now()) {
                self.start_queued(id);
            }
            let ready = match self.wait(signals) {
                Ok(ready) => ready,
                Err(e) => {
                    log::error!("poll failed: {e}");
                    return 1;
                }
            };
            for event in ready {
                let keep_going = match event {
                    Ready::Control => self.handle_control(),
                    Ready::Vmm => self.handle_vmm(),
                    Ready::Signals => self.handle_signals(signals, children),
                };
                if !keep_going {
                    return 1;
                }
            }
        }
    }

    fn wait(&self, signals: &SignalFd) -> nix::Result<Vec<Ready>> {
        let sources = vec![
            (Ready::Control, self.control.as_fd()),
            (Ready::Vmm, self.vmm.as_fd()),
            (Ready::Signals, signals.as_fd()),
        ];
        let timeout = match (self.shutdown_deadline, self.staggered.next_batch()) {
            (Some(_), _) => PollTimeout::from(100u8),
            (None, due) => crate::event::timeout_until(due),
        };
        crate::event::wait_ready(sources, timeout)
    }

    fn register_config(&mut self, config: &vmconf::Config) {
        for (name, definition) in config::definitions(config) {
            let id = self.registry.claim_id(&name, definition.owner.uid);
            let enabled = definition.enabled;
            self.registry.insert(VmEntry::new(id, name, definition));
            if enabled {
                self.staggered.push(id);
            }
        }
    }

    fn start_queued(&mut self, id: u32) {
        let Some(vm) = self.registry.get_mut(id) else {
            return;
        };
        if vm.lifecycle != Lifecycle::Stopped || self.shutdown_deadline.is_some() {
            return;
        }
        let name = vm.name.clone();
        match self.start_vm(id) {
            Ok(()) => log::debug!("vm {name}: starting"),
            Err(error) => log::error!("vm {name}: cannot start: {}", describe(&error)),
        }
    }

    fn all_stopped(&self) -> bool {
        self.registry
            .iter()
            .all(|vm| vm.lifecycle == Lifecycle::Stopped)
    }

    // Returns false when vmd must exit.
    fn handle_signals(&mut self, signals: &SignalFd, children: &mut [&mut Child]) -> bool {
        while let Ok(Some(info)) = signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGTERM | Signal::SIGINT) => self.begin_shutdown(),
                Ok(Signal::SIGHUP) => {
                    log::warn!("reload requested; reloading vm.conf is not supported yet")
                }
                Ok(Signal::SIGCHLD) => {
                    for child in children.iter_mut() {
                        if let Ok(Some(status)) = child.try_wait() {
                            log::error!("a vmd process ({}) exited: {status}", child.id());
                            return false;
                        }
                    }
                }
                _ => {}
            }
        }
        true
    }

    // Stopping vmd asks every guest to power off first, then kills what
    // is left after the grace period (OpenBSD's vmd kills them at once).
    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        log::info!("shutting down: stopping the running VMs");
        self.shutdown_deadline = Some(Instant::now() + SHUTDOWN_GRACE);
        let running: Vec<u32> = self
            .registry
            .iter()
            .filter(|vm| vm.lifecycle != Lifecycle::Stopped)
            .map(|vm| vm.id)
            .collect();
        for id in running {
            self.request_stop(id, false);
        }
    }

    // Returns false when the control process is gone.
    fn handle_control(&mut self) -> bool {
        let received: Received<ControlToParent> = match self.control.recv() {
            Ok(Some(received)) => received,
            Ok(None) => {
                log::error!("the control process exited");
                return false;
            }
            Err(e) => {
                log::warn!("bad message from the control process: {e}");
                return true;
            }
        };
        let client = received.header.peer_id;
        match received.message {
            ControlToParent::Request {
                credentials,
                request,
            } => self.handle_request(client, credentials, request, received.fds),
            ControlToParent::Closed => self.forget_client(client),
        }
        true
    }

    fn forget_client(&mut self, client: u32) {
        for vm in self.registry.iter_mut() {
            vm.waiters.retain(|(waiting, _)| *waiting != client);
        }
    }

    /// Sends `reply` to control client `client`.
    pub fn reply(&self, client: u32, reply: ControlResponse) {
        if let Err(e) = self
            .control
            .send(client, &ParentToControl::Reply(reply), &[])
        {
            log::error!("cannot reach the control process: {e}");
        }
    }

    // Returns false when the vmm process is gone.
    fn handle_vmm(&mut self) -> bool {
        let received: Received<VmmToParent> = match self.vmm.recv() {
            Ok(Some(received)) => received,
            Ok(None) => {
                log::error!("the vmm process exited");
                return false;
            }
            Err(e) => {
                log::warn!("bad message from the vmm process: {e}");
                return true;
            }
        };
        match received.message {
            VmmToParent::VmStarted { id, pid } => self.vm_started(id, pid),
            VmmToParent::VmStartFailed { id, error } => self.vm_start_failed(id, error),
            VmmToParent::VmExited { id, reason } => self.vm_exited(id, reason),
        }
        true
    }

    fn take_waiters(&mut self, id: u32, kinds: &[WaitKind]) -> Vec<(u32, WaitKind)> {
        let Some(vm) = self.registry.get_mut(id) else {
            return Vec::new();
        };
        let (taken, kept) = vm
            .waiters
            .drain(..)
            .partition(|(_, kind)| kinds.contains(kind));
        vm.waiters = kept;
        taken
    }

    fn vm_started(&mut self, id: u32, pid: u32) {
        let Some(vm) = self.registry.get_mut(id) else {
            return;
        };
        if vm.lifecycle == Lifecycle::Starting {
            vm.lifecycle = Lifecycle::Running;
        }
        vm.pid = Some(pid);
        let tty = vm
            .console
            .as_ref()
            .map(|c| c.path.clone())
            .unwrap_or_default();
        log::info!("vm {}: started, id {id}, tty {tty}", vm.name);
        for (client, _) in self.take_waiters(id, &[WaitKind::Start]) {
            self.reply(
                client,
                ControlResponse::Started {
                    id,
                    pid,
                    tty: tty.clone(),
                },
            );
        }
    }

    fn vm_start_failed(&mut self, id: u32, error: proto::ErrorReply) {
        let Some(vm) = self.registry.get_mut(id) else {
            return;
        };
        log::warn!("vm {}: start failed: {}", vm.name, error.detail);
        let remove = vm.definition.origin == Origin::Vmctl
            && vm.waiters.iter().any(|(_, kind)| *kind == WaitKind::Start);
        for (client, _) in self.take_waiters(id, &[WaitKind::Start]) {
            self.reply(client, ControlResponse::Error(error.clone()));
        }
        self.finish_stop(id);
        // A VM that vmctl defined and that never came up is forgotten, so
        // the user can start it again with other options.
        if remove {
            self.registry.remove(id);
        }
    }

    fn vm_exited(&mut self, id: u32, reason: VmExitReason) {
        let Some(vm) = self.registry.get_mut(id) else {
            return;
        };
        let stopping = vm.lifecycle == Lifecycle::Stopping || self.shutdown_deadline.is_some();
        vm.pid = None;
        if reason == VmExitReason::Reboot && !stopping {
            log::info!("vm {}: rebooting", vm.name);
            let name = vm.name.clone();
            if let Err(error) = self.start_vm(id) {
                log::warn!("vm {name}: restart failed: {}", error.detail);
                self.finish_stop(id);
            }
            return;
        }
        let text = match &reason {
            VmExitReason::PowerOff => "powered off".to_string(),
            VmExitReason::Reboot => "stopped at reboot".to_string(),
            VmExitReason::Stopped => "stopped".to_string(),
            VmExitReason::Killed => "killed".to_string(),
            VmExitReason::Failed(why) => format!("failed: {why}"),
        };
        log::info!("vm {}: {text}", vm.name);
        self.finish_stop(id);
    }

    // Marks a VM stopped, closes its console (attached users see the
    // end), and answers whoever waits for its end.
    fn finish_stop(&mut self, id: u32) {
        let Some(vm) = self.registry.get_mut(id) else {
            return;
        };
        vm.lifecycle = Lifecycle::Stopped;
        vm.pid = None;
        vm.console = None;
        for (client, kind) in
            self.take_waiters(id, &[WaitKind::Terminate, WaitKind::ForceTerminate])
        {
            let reply = match kind {
                WaitKind::ForceTerminate => ControlResponse::ForceTerminated { id },
                _ => ControlResponse::Terminated { id },
            };
            self.reply(client, reply);
        }
    }
}

/// Describes a start failure for the log: the detail text, or the code.
fn describe(error: &proto::ErrorReply) -> String {
    if error.detail.is_empty() {
        std::io::Error::from_raw_os_error(error.code.0).to_string()
    } else {
        error.detail.clone()
    }
}

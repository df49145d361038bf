//! The vmm process: starts one vm process per VM, relays stop requests to
//! them, and reports their start results and exits to the parent.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use proto::{
    Channel, ErrorCode, ErrorReply, ParentToVmm, Received, VmExitReason, VmSpec, VmToVmm,
    VmmToParent, VmmToVm,
};

use crate::privsep::{self, Role};
use crate::vm::{EXIT_POWER_OFF, EXIT_REBOOT, EXIT_STOPPED};

/// How long a guest may take to power off after the power button before
/// its vm process is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(120);

struct VmProcess {
    id: u32,
    name: String,
    pid: Pid,
    channel: Option<Channel>,
    running: bool,
    start_failed: bool,
    exit_reason: Option<VmExitReason>,
    kill_deadline: Option<Instant>,
}

struct Vmm {
    parent: Channel,
    children: HashMap<u32, VmProcess>,
    child_args: Vec<String>,
}

/// Runs the vmm role; returns the process exit status.
pub fn main(flags: &crate::Flags) -> i32 {
    let parent = match privsep::inherited_channel() {
        Ok(channel) => channel,
        Err(e) => {
            log::error!("cannot take the parent channel: {e}");
            return 1;
        }
    };
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    if let Err(e) = mask.thread_block() {
        log::error!("cannot block SIGCHLD: {e}");
        return 1;
    }
    let signals = match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
    {
        Ok(signals) => signals,
        Err(e) => {
            log::error!("cannot create a signalfd: {e}");
            return 1;
        }
    };
    let mut vmm = Vmm {
        parent,
        children: HashMap::new(),
        child_args: flags.logging_args(),
    };
    vmm.run(&signals)
}

enum Ready {
    Parent,
    Signals,
    Child(u32),
}

impl Vmm {
    fn run(&mut self, signals: &SignalFd) -> i32 {
        loop {
            let ready = match self.wait(signals) {
                Ok(ready) => ready,
                Err(e) => {
                    log::error!("poll failed: {e}");
                    return 1;
                }
            };
            for event in ready {
                match event {
                    Ready::Parent => {
                        if !self.handle_parent() {
                            self.kill_all();
                            return 0;
                        }
                    }
                    Ready::Signals => {
                        while let Ok(Some(_)) = signals.read_signal() {}
                        self.reap();
                    }
                    Ready::Child(id) => self.handle_child(id),
                }
            }
            self.enforce_deadlines();
        }
    }

    fn wait(&self, signals: &SignalFd) -> nix::Result<Vec<Ready>> {
        let mut sources = vec![
            (Ready::Parent, self.parent.as_fd()),
            (Ready::Signals, signals.as_fd()),
        ];
        for child in self.children.values() {
            if let Some(channel) = &child.channel {
                sources.push((Ready::Child(child.id), channel.as_fd()));
            }
        }
        let deadline = self.children.values().filter_map(|c| c.kill_deadline).min();
        crate::event::wait_ready(sources, crate::event::timeout_until(deadline))
    }

    // Returns false when the parent is gone.
    fn handle_parent(&mut self) -> bool {
        let received = match self.parent.recv::<ParentToVmm>() {
            Ok(Some(received)) => received,
            Ok(None) => return false,
            Err(e) => {
                log::warn!("bad message from the parent: {e}");
                return true;
            }
        };
        match received.message {
            ParentToVmm::StartVm(spec) => self.start(spec, received.fds),
            ParentToVmm::StopVm { id, force } => self.stop(id, force),
        }
        true
    }

    fn send_parent(&self, message: VmmToParent) {
        if let Err(e) = self.parent.send(0, &message, &[]) {
            log::error!("cannot reach the parent: {e}");
        }
    }

    fn start(&mut self, spec: VmSpec, fds: Vec<OwnedFd>) {
        let id = spec.id;
        if self.children.contains_key(&id) {
            self.send_parent(VmmToParent::VmStartFailed {
                id,
                error: ErrorReply::new(ErrorCode::ALREADY, "vm process exists"),
            });
            return;
        }
        let (child, channel) = match privsep::spawn(
            Role::Vm,
            &format!("vmd: vm/{}", spec.name),
            &self.child_args,
            None,
        ) {
            Ok(spawned) => spawned,
            Err(e) => {
                log::error!("vm {}: cannot start a vm process: {e}", spec.name);
                self.send_parent(VmmToParent::VmStartFailed {
                    id,
                    error: ErrorReply::new(ErrorCode::from_io(&e), "cannot start a vm process"),
                });
                return;
            }
        };
        let pid = Pid::from_raw(child.id() as i32);
        let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
        let name = spec.name.clone();
        if let Err(e) = channel.send(id, &VmmToVm::Start(spec), &borrowed) {
            log::error!("vm {name}: cannot hand the VM to its process: {e}");
            let _ = kill(pid, Signal::SIGKILL);
        }
        // The vm process has its own copies of the descriptors now.
        drop(fds);
        self.children.insert(
            id,
            VmProcess {
                id,
                name,
                pid,
                channel: Some(channel),
                running: false,
                start_failed: false,
                exit_reason: None,
                kill_deadline: None,
            },
        );
    }

    fn stop(&mut self, id: u32, force: bool) {
        let Some(child) = self.children.get_mut(&id) else {
            log::debug!("stop for vm {id}, which has no process");
            return;
        };
        let graceful = !force && child.running && child.channel.is_some();
        if graceful {
            let sent = child
                .channel
                .as_ref()
                .is_some_and(|channel| channel.send(id, &VmmToVm::Shutdown, &[]).is_ok());
            if sent {
                child
                    .kill_deadline
                    .get_or_insert(Instant::now() + SHUTDOWN_TIMEOUT);
                return;
            }
        }
        child.exit_reason = Some(VmExitReason::Killed);
        let _ = kill(child.pid, Signal::SIGKILL);
    }

    fn handle_child(&mut self, id: u32) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        let Some(channel) = &child.channel else {
            return;
        };
        let received: Received<VmToVmm> = match channel.recv() {
            Ok(Some(received)) => received,
            Ok(None) | Err(_) => {
                // The process is exiting; SIGCHLD brings its status.
                child.channel = None;
                return;
            }
        };
        let message = match received.message {
            VmToVmm::Running => {
                child.running = true;
                VmmToParent::VmStarted {
                    id,
                    pid: child.pid.as_raw() as u32,
                }
            }
            VmToVmm::StartFailed(error) => {
                child.start_failed = true;
                VmmToParent::VmStartFailed { id, error }
            }
            VmToVmm::Exiting(reason) => {
                if child.exit_reason.is_none() {
                    child.exit_reason = Some(reason);
                }
                return;
            }
        };
        self.send_parent(message);
    }

    fn reap(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else {
                continue;
            };
            let Some(id) = self.children.values().find(|c| c.pid == pid).map(|c| c.id) else {
                continue;
            };
            // The process wrote its last messages before it exited; read
            // them before its exit is reported.
            self.drain_child(id);
            let child = self.children.remove(&id).expect("found above");
            let reason = child
                .exit_reason
                .clone()
                .unwrap_or_else(|| reason_from_status(status));
            log::debug!("vm {}: process {} ended: {reason:?}", child.name, pid);
            if !child.running && !child.start_failed {
                self.send_parent(VmmToParent::VmStartFailed {
                    id,
                    error: ErrorReply::new(
                        ErrorCode::START_FAILED,
                        format!("vm process ended before the guest started: {reason:?}"),
                    ),
                });
            } else if child.running {
                self.send_parent(VmmToParent::VmExited { id, reason });
            }
        }
    }

    fn drain_child(&mut self, id: u32) {
        loop {
            let readable = self
                .children
                .get(&id)
                .and_then(|child| child.channel.as_ref())
                .is_some_and(|channel| {
                    let mut fds = [PollFd::new(channel.as_fd(), PollFlags::POLLIN)];
                    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
                });
            if !readable {
                return;
            }
            self.handle_child(id);
        }
    }

    fn enforce_deadlines(&mut self) {
        let now = Instant::now();
        for child in self.children.values_mut() {
            if child.kill_deadline.is_some_and(|deadline| deadline <= now) {
                log::warn!(
                    "vm {}: guest did not power off within {} s; killing it",
                    child.name,
                    SHUTDOWN_TIMEOUT.as_secs()
                );
                child.kill_deadline = None;
                child.exit_reason = Some(VmExitReason::Killed);
                let _ = kill(child.pid, Signal::SIGKILL);
            }
        }
    }

    fn kill_all(&mut self) {
        for child in self.children.values() {
            let _ = kill(child.pid, Signal::SIGKILL);
        }
        for child in self.children.values() {
            let _ = waitpid(child.pid, None);
        }
        self.children.clear();
    }
}

fn reason_from_status(status: WaitStatus) -> VmExitReason {
    match status {
        WaitStatus::Exited(_, EXIT_POWER_OFF) => VmExitReason::PowerOff,
        WaitStatus::Exited(_, EXIT_REBOOT) => VmExitReason::Reboot,
        WaitStatus::Exited(_, EXIT_STOPPED) => VmExitReason::Stopped,
        WaitStatus::Exited(_, code) => VmExitReason::Failed(format!("exit status {code}")),
        WaitStatus::Signaled(_, Signal::SIGKILL, _) => VmExitReason::Killed,
        WaitStatus::Signaled(_, signal, _) => VmExitReason::Failed(format!("killed by {signal}")),
        other => VmExitReason::Failed(format!("{other:?}")),
    }
}

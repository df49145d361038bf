//! Process separation: starting a role as a fresh `vmd` process with one
//! end of a message channel, and picking that channel up in the child.
//!
//! Children are started by re-executing `/proc/self/exe`, not by a bare
//! fork, because a forked multi-threaded process may only call
//! async-signal-safe functions before exec.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use proto::Channel;

/// The descriptor number of the channel in a child.
const CHILD_CHANNEL_FD: i32 = 3;

/// The roles of vmd processes other than the parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Owns the control socket and relays client requests.
    Control,
    /// Starts and watches the vm processes.
    Vmm,
    /// Runs one VM.
    Vm,
}

impl Role {
    fn arg(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Vmm => "vmm",
            Role::Vm => "vm",
        }
    }

    /// The prefix of this role's log messages.
    pub fn log_prefix(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Vmm => "vmm",
            Role::Vm => "vm",
        }
    }
}

/// Starts `role` as a child process with `args`; returns the child and the
/// parent's end of its channel.
pub fn spawn(role: Role, args: &[String]) -> std::io::Result<(Child, Channel)> {
    let (ours, theirs) = Channel::pair()?;
    let theirs = theirs.into_fd();
    let raw = theirs.as_raw_fd();
    let mut command = Command::new("/proc/self/exe");
    command.arg("--role").arg(role.arg()).args(args);
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only dup2 and fcntl, which are async-signal-safe. `raw` stays open in
    // the parent until spawn returns, so it is valid in the child.
    unsafe {
        command.pre_exec(move || {
            let result = if raw == CHILD_CHANNEL_FD {
                // dup2 onto itself keeps close-on-exec set; clear it.
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, CHILD_CHANNEL_FD)
            };
            if result < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(theirs);
    Ok((child, ours))
}

/// Takes the channel a parent handed this process as descriptor 3.
pub fn inherited_channel() -> std::io::Result<Channel> {
    let metadata = rustix::fs::fstat(
        // SAFETY: only borrowed for the duration of fstat; a closed fd 3
        // makes fstat fail with EBADF, which is returned.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(CHILD_CHANNEL_FD) },
    )?;
    if rustix::fs::FileType::from_raw_mode(metadata.st_mode) != rustix::fs::FileType::Socket {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "descriptor 3 is not the channel socket (vmd starts its roles itself)",
        ));
    }
    // SAFETY: descriptor 3 is open (fstat succeeded), is a socket, and
    // nothing else in this process owns it: the parent placed it there
    // for this process alone before exec.
    let fd = unsafe { OwnedFd::from_raw_fd(CHILD_CHANNEL_FD) };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    Ok(Channel::from_fd(fd))
}

//! Process separation: starting a role as a fresh `vmd` process with one
//! end of a message channel, and picking that channel up in the child.
//!
//! Children are started by re-executing `/proc/self/exe`, not by a bare
//! fork, because a forked multi-threaded process may only call
//! async-signal-safe functions before exec.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use proto::Channel;

/// The descriptor number of the channel in a child.
const CHILD_CHANNEL_FD: i32 = 3;

/// The descriptor number of the one extra descriptor a child may get (the
/// control socket, for the control process).
pub const CHILD_EXTRA_FD: i32 = 4;

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
    /// Returns the role's name: the value of `--role` and the prefix of
    /// its log messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Vmm => "vmm",
            Role::Vm => "vm",
        }
    }
}

/// Starts `role` as a child process named `title` in ps (its argv\[0\]),
/// with `args`, and `extra` as its descriptor [`CHILD_EXTRA_FD`]; returns
/// the child and the parent's end of its channel.
pub fn spawn(
    role: Role,
    title: &str,
    args: &[String],
    extra: Option<BorrowedFd<'_>>,
) -> std::io::Result<(Child, Channel)> {
    let (ours, theirs) = Channel::pair()?;
    let theirs = theirs.into_fd();
    let raw = theirs.as_raw_fd();
    let extra_raw = extra.map(|fd| fd.as_raw_fd());
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0(title)
        .arg("--role")
        .arg(role.name())
        .args(args);
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only dup and fcntl, which are async-signal-safe. `raw` and
    // `extra_raw` stay open in the parent until spawn returns, so they are
    // valid in the child.
    unsafe {
        command.pre_exec(move || {
            // First move both descriptors clear of 3 and 4, so that placing
            // one cannot overwrite the other.
            let channel = libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 10);
            if channel < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let extra = match extra_raw {
                Some(fd) => {
                    let moved = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                    if moved < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Some(moved)
                }
                None => None,
            };
            // dup2 clears close-on-exec on the copy.
            if libc::dup2(channel, CHILD_CHANNEL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(extra) = extra
                && libc::dup2(extra, CHILD_EXTRA_FD) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(theirs);
    Ok((child, ours))
}

/// Names this process "vmd" in ps -e and top, instead of "exe", which it
/// was started as.
pub fn set_process_name() {
    let _ = nix::sys::prctl::set_name(c"vmd");
}

/// Takes the channel a parent handed this process as descriptor 3.
pub fn inherited_channel() -> std::io::Result<Channel> {
    inherited_socket(CHILD_CHANNEL_FD).map(Channel::from_fd)
}

/// Takes the socket a parent handed this process as descriptor `number`.
pub fn inherited_socket(number: i32) -> std::io::Result<OwnedFd> {
    let metadata = rustix::fs::fstat(
        // SAFETY: only borrowed for the duration of fstat; a closed
        // descriptor makes fstat fail with EBADF, which is returned.
        unsafe { BorrowedFd::borrow_raw(number) },
    )?;
    if rustix::fs::FileType::from_raw_mode(metadata.st_mode) != rustix::fs::FileType::Socket {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("descriptor {number} is not a socket (vmd starts its roles itself)"),
        ));
    }
    // SAFETY: the descriptor is open (fstat succeeded), is a socket, and
    // nothing else in this process owns it: the parent placed it there
    // for this process alone before exec.
    let fd = unsafe { OwnedFd::from_raw_fd(number) };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
    Ok(fd)
}

//! A VM's console: a pty pair whose master the vm process drives and whose
//! slave (`/dev/pts/N`) users attach to.

use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::pty::openpty;
use nix::sys::stat::{Mode, fchmod};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use nix::unistd::{Gid, Uid, fchown};

/// An open pty pair.
pub struct Console {
    /// Handed to the vm process (non-blocking).
    pub master: OwnedFd,
    /// Kept open by the parent, so the guest's output is buffered and the
    /// master never reports a hang-up while no user is attached.
    _slave: OwnedFd,
    /// The slave's path, e.g. `/dev/pts/3`.
    pub path: String,
}

impl Console {
    /// Opens a pty for a VM started by `uid`. The slave is in raw mode and
    /// owned by `uid`: with the VM owner's group `gid` and mode 0660 when
    /// there is one, else group tty and mode 0620, else mode 0600.
    pub fn open(uid: u32, gid: Option<u32>) -> nix::Result<Console> {
        let pty = openpty(None, None)?;
        let path = nix::unistd::ttyname(pty.slave.as_fd())?
            .to_string_lossy()
            .into_owned();

        // Raw: the guest's bytes pass through unchanged in both directions.
        let mut termios = tcgetattr(pty.slave.as_fd())?;
        cfmakeraw(&mut termios);
        tcsetattr(pty.slave.as_fd(), SetArg::TCSANOW, &termios)?;

        let (gid, mode) = match gid {
            Some(gid) => (Gid::from_raw(gid), 0o660),
            None => match nix::unistd::Group::from_name("tty").ok().flatten() {
                Some(group) => (group.gid, 0o620),
                None => (Gid::from_raw(0), 0o600),
            },
        };
        fchown(pty.slave.as_fd(), Some(Uid::from_raw(uid)), Some(gid))?;
        fchmod(pty.slave.as_fd(), Mode::from_bits_truncate(mode))?;

        let flags = OFlag::from_bits_truncate(fcntl(pty.master.as_fd(), FcntlArg::F_GETFL)?);
        fcntl(
            pty.master.as_fd(),
            FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
        )?;
        Ok(Console {
            master: pty.master,
            _slave: pty.slave,
            path,
        })
    }
}

//! `vmctl console`: attach the terminal to a VM's pty, as `cu` would.
//! Typing `~.` at the start of a line leaves; the session also ends when
//! the VM stops.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};

use crate::client::Client;

/// Runs `vmctl console ID`.
pub fn run(socket: &Path, id: &str) -> Result<(), String> {
    let target = crate::parse_target(id)?;
    let list = Client::connect(socket)?.status()?;
    let tty = list
        .into_iter()
        .find(|vm| target.matches(vm.id, &vm.name))
        .and_then(|vm| vm.tty)
        .ok_or("console not found")?;
    attach(&tty)
}

/// Restores the terminal's settings when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        // TCSANOW keeps what was typed ahead; it goes to the guest.
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSAFLUSH, &self.saved);
    }
}

/// Tracks where a line starts, to spot the `~.` escape.
#[derive(Default)]
struct EscapeScanner {
    at_line_start: bool,
    tilde_pending: bool,
}

impl EscapeScanner {
    fn new() -> EscapeScanner {
        EscapeScanner {
            at_line_start: true,
            tilde_pending: false,
        }
    }

    // Returns the bytes to forward, and whether `~.` was typed.
    fn scan(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut forward = Vec::with_capacity(input.len() + 1);
        for &byte in input {
            if self.tilde_pending {
                self.tilde_pending = false;
                if byte == b'.' {
                    return (forward, true);
                }
                forward.push(b'~');
                if byte == b'~' {
                    // "~~" sends one tilde.
                    self.at_line_start = false;
                    continue;
                }
            } else if self.at_line_start && byte == b'~' {
                self.tilde_pending = true;
                continue;
            }
            forward.push(byte);
            self.at_line_start = matches!(byte, b'\r' | b'\n');
        }
        (forward, false)
    }
}

/// Connects the terminal to the pty at `tty` until `~.` or the VM ends.
pub fn attach(tty: &str) -> Result<(), String> {
    let pty = File::options()
        .read(true)
        .write(true)
        .custom_flags(OFlag::O_NOCTTY.bits())
        .open(tty)
        .map_err(|e| format!("{tty}: {}", proto::error_chain(&e)))?;
    // One console session at a time, as cu's lock file ensures on
    // OpenBSD: two readers would each get half of the output.
    let mut pty = match Flock::lock(pty, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            return Err(format!("{tty}: console is in use by another vmctl"));
        }
        Err((_, e)) => return Err(format!("{tty}: cannot lock: {}", e.desc())),
    };
    let interactive = nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false);
    let raw_mode = if interactive {
        let raw_mode = RawMode::enter();
        proto::report!("Connected to {tty} (type ~. to leave)\r\n");
        raw_mode
    } else {
        None
    };
    let result = copy_loop(&mut pty, interactive);
    drop(raw_mode);
    if interactive {
        proto::reportln!("\n[EOT]");
    }
    result
}

fn copy_loop(pty: &mut File, interactive: bool) -> Result<(), String> {
    let mut stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut scanner = EscapeScanner::new();
    let mut stdin_open = true;
    let mut buffer = [0u8; 4096];
    loop {
        let stdin_fd = stdin.as_fd();
        let mut fds = vec![PollFd::new(pty.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let pty_events = fds[0].revents().unwrap_or(PollFlags::empty());
        let stdin_events = fds
            .get(1)
            .and_then(|fd| fd.revents())
            .unwrap_or(PollFlags::empty());

        if pty_events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match pty.read(&mut buffer) {
                // EIO: every master is closed, the VM has stopped.
                Ok(0) | Err(_) => return Ok(()),
                Ok(count) => {
                    stdout
                        .write_all(&buffer[..count])
                        .and_then(|()| stdout.flush())
                        .map_err(|e| format!("stdout: {e}"))?;
                }
            }
        }
        if stdin_events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            let count = stdin.read(&mut buffer).unwrap_or(0);
            if count == 0 {
                // Without a terminal, keep showing output until the VM ends.
                stdin_open = false;
                if interactive {
                    return Ok(());
                }
                continue;
            }
            let (forward, leave) = scanner.scan(&buffer[..count]);
            pty.write_all(&forward)
                .map_err(|e| format!("console: {e}"))?;
            if leave {
                return Ok(());
            }
        }
    }
}

use std::os::unix::fs::OpenOptionsExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_dot_at_line_start_leaves() {
        let mut scanner = EscapeScanner::new();
        assert_eq!(scanner.scan(b"ls\r~."), (b"ls\r".to_vec(), true));
    }

    #[test]
    fn tilde_inside_line_is_forwarded() {
        let mut scanner = EscapeScanner::new();
        assert_eq!(scanner.scan(b"a~."), (b"a~.".to_vec(), false));
    }

    #[test]
    fn double_tilde_sends_one() {
        let mut scanner = EscapeScanner::new();
        assert_eq!(scanner.scan(b"~~."), (b"~.".to_vec(), false));
    }

    #[test]
    fn escape_split_across_reads_is_seen() {
        let mut scanner = EscapeScanner::new();
        assert_eq!(scanner.scan(b"\n~"), (b"\n".to_vec(), false));
        assert_eq!(scanner.scan(b"."), (Vec::new(), true));
    }
}

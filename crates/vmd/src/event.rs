//! Waiting on several descriptors at once, for the event loops of vmd's
//! processes.

use std::os::fd::BorrowedFd;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Waits until at least one descriptor of `sources` is readable (or hung
/// up), or `timeout` passes; returns the tags of the ready ones, in order.
/// An interrupted wait returns no tags.
pub fn wait_ready<T>(
    sources: Vec<(T, BorrowedFd<'_>)>,
    timeout: PollTimeout,
) -> nix::Result<Vec<T>> {
    let (tags, fds): (Vec<T>, Vec<BorrowedFd<'_>>) = sources.into_iter().unzip();
    let mut poll_fds: Vec<PollFd> = fds
        .into_iter()
        .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
        .collect();
    match poll(&mut poll_fds, timeout) {
        Ok(_) => {}
        Err(nix::Error::EINTR) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    Ok(tags
        .into_iter()
        .zip(poll_fds.iter())
        .filter(|(_, fd)| fd.revents().is_some_and(|events| !events.is_empty()))
        .map(|(tag, _)| tag)
        .collect())
}

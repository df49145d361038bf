//! Waiting on several descriptors at once, for the event loops of vmd's
//! processes.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Returns the poll timeout that ends just after `deadline`, or no
/// timeout without one.
pub fn timeout_until(deadline: Option<Instant>) -> PollTimeout {
    deadline.map_or(PollTimeout::NONE, |deadline| {
        let left = deadline.saturating_duration_since(Instant::now());
        PollTimeout::try_from(left + Duration::from_millis(1)).unwrap_or(PollTimeout::MAX)
    })
}

/// Waits until at least one descriptor of `sources` is readable (or hung
/// up), or `timeout` passes; returns the tags of the ready ones, in order.
/// An interrupted wait returns no tags.
pub fn wait_ready<T>(
    sources: Vec<(T, BorrowedFd<'_>)>,
    timeout: PollTimeout,
) -> nix::Result<Vec<T>> {
    let sources = sources
        .into_iter()
        .map(|(tag, fd)| (tag, fd, PollFlags::POLLIN))
        .collect();
    wait_for(sources, timeout)
}

/// Waits until at least one descriptor of `sources` has one of its events
/// (or hung up), or `timeout` passes; returns the tags of the ready ones,
/// in order. An interrupted wait returns no tags.
pub fn wait_for<T>(
    sources: Vec<(T, BorrowedFd<'_>, PollFlags)>,
    timeout: PollTimeout,
) -> nix::Result<Vec<T>> {
    let mut tags = Vec::with_capacity(sources.len());
    let mut poll_fds = Vec::with_capacity(sources.len());
    for (tag, fd, events) in sources {
        tags.push(tag);
        poll_fds.push(PollFd::new(fd, events));
    }
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

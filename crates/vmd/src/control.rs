//! The control process: accepts clients on the control socket (which the
//! parent created and handed over), identifies each client by its peer
//! credentials, and relays requests to the parent and replies back.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{PollFlags, PollTimeout};
use proto::{
    Channel, ChannelError, ControlRequest, ControlResponse, ControlToParent, Credentials,
    ErrorCode, ErrorReply, ParentToControl, Received,
};
use rustix::net::{SocketFlags, accept_with, sockopt};

use crate::privsep;

/// Clients served at once. Further connections get an error reply and are
/// closed.
const MAX_CLIENTS: usize = 256;

/// Replies held for one client that reads slowly; past this many it is
/// dropped. A status of every VM is one reply per VM.
const MAX_QUEUED_REPLIES: usize = 65_536;

struct Client {
    channel: Channel,
    credentials: Credentials,
    /// Replies the socket had no room for yet, oldest first.
    queued: VecDeque<ControlResponse>,
}

struct Control {
    parent: Channel,
    listener: OwnedFd,
    clients: BTreeMap<u32, Client>,
    next_client_id: u32,
}

/// Runs the control role; returns the process exit status.
pub fn main() -> i32 {
    let parent = match privsep::inherited_channel() {
        Ok(channel) => channel,
        Err(e) => {
            log::error!("cannot take the parent channel: {e}");
            return 1;
        }
    };
    let listener = match privsep::inherited_socket(privsep::CHILD_EXTRA_FD) {
        Ok(listener) => listener,
        Err(e) => {
            log::error!("cannot take the control socket: {e}");
            return 1;
        }
    };
    let mut control = Control {
        parent,
        listener,
        clients: BTreeMap::new(),
        next_client_id: 1,
    };
    control.run()
}

enum Ready {
    Parent,
    Listener,
    Client(u32),
    Writable(u32),
}

impl Control {
    fn run(&mut self) -> i32 {
        loop {
            let ready = match self.wait() {
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
                            return 0;
                        }
                    }
                    Ready::Listener => self.accept(),
                    Ready::Client(id) => self.handle_client(id),
                    Ready::Writable(id) => self.flush(id),
                }
            }
        }
    }

    fn wait(&self) -> nix::Result<Vec<Ready>> {
        let mut sources = vec![
            (Ready::Parent, self.parent.as_fd(), PollFlags::POLLIN),
            (Ready::Listener, self.listener.as_fd(), PollFlags::POLLIN),
        ];
        for (&id, client) in &self.clients {
            sources.push((Ready::Client(id), client.channel.as_fd(), PollFlags::POLLIN));
            if !client.queued.is_empty() {
                sources.push((
                    Ready::Writable(id),
                    client.channel.as_fd(),
                    PollFlags::POLLOUT,
                ));
            }
        }
        crate::event::wait_for(sources, PollTimeout::NONE)
    }

    fn accept(&mut self) {
        // Clients are non-blocking: one that stops reading its replies is
        // dropped instead of stalling every other client.
        let socket = match accept_with(&self.listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)
        {
            Ok(socket) => socket,
            Err(e) => {
                log::debug!("accept failed: {e}");
                return;
            }
        };
        if self.clients.len() >= MAX_CLIENTS {
            log::warn!("too many clients ({MAX_CLIENTS}); closing a new connection");
            let reply =
                ControlResponse::Error(ErrorReply::new(ErrorCode::BUSY, "too many connections"));
            let _ = Channel::from_fd(socket).send(0, &reply, &[]);
            return;
        }
        let credentials = match sockopt::socket_peercred(&socket) {
            Ok(ucred) => Credentials {
                uid: ucred.uid.as_raw(),
                gid: ucred.gid.as_raw(),
                pid: ucred.pid.as_raw_nonzero().get() as u32,
            },
            Err(e) => {
                log::warn!("cannot read the credentials of a client: {e}");
                return;
            }
        };
        let id = self.next_client_id;
        self.next_client_id = self.next_client_id.wrapping_add(1).max(1);
        self.clients.insert(
            id,
            Client {
                channel: Channel::from_fd(socket),
                credentials,
                queued: VecDeque::new(),
            },
        );
    }

    fn handle_client(&mut self, id: u32) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        let received: Received<ControlRequest> = match client.channel.recv() {
            Ok(Some(received)) => received,
            Ok(None) => {
                self.drop_client(id);
                return;
            }
            Err(e) => {
                log::debug!("client {id} (uid {}): {e}", client.credentials.uid);
                let reply = ControlResponse::Error(ErrorReply::new(
                    ErrorCode::INVALID,
                    "malformed request",
                ));
                let _ = client.channel.send(0, &reply, &[]);
                self.drop_client(id);
                return;
            }
        };
        let credentials = client.credentials;
        let message = ControlToParent::Request {
            credentials,
            request: received.message,
        };
        let fds: Vec<_> = received.fds.iter().map(|fd| fd.as_fd()).collect();
        if let Err(e) = self.parent.send(id, &message, &fds) {
            log::error!("cannot reach the parent: {e}");
        }
    }

    fn drop_client(&mut self, id: u32) {
        if self.clients.remove(&id).is_some() {
            let _ = self.parent.send(id, &ControlToParent::Closed, &[]);
        }
    }

    // Returns false when the parent is gone.
    fn handle_parent(&mut self) -> bool {
        let received: Received<ParentToControl> = match self.parent.recv() {
            Ok(Some(received)) => received,
            Ok(None) => return false,
            Err(e) => {
                log::warn!("bad message from the parent: {e}");
                return true;
            }
        };
        let id = received.header.peer_id;
        let ParentToControl::Reply(reply) = received.message;
        if let Some(client) = self.clients.get_mut(&id) {
            client.queued.push_back(reply);
            if client.queued.len() > MAX_QUEUED_REPLIES {
                log::warn!(
                    "client {id} (uid {}) does not read its replies; dropping it",
                    client.credentials.uid
                );
                self.drop_client(id);
            } else {
                self.flush(id);
            }
        }
        true
    }

    // Sends a client's queued replies until its socket is full; the rest
    // wait for the socket to become writable.
    fn flush(&mut self, id: u32) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        while let Some(reply) = client.queued.front() {
            match client.channel.send(0, reply, &[]) {
                Ok(()) => {
                    client.queued.pop_front();
                }
                Err(ChannelError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::debug!("client {id}: {e}");
                    self.drop_client(id);
                    return;
                }
            }
        }
    }
}

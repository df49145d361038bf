//! The control process: owns the control socket, identifies each client
//! by its peer credentials, and relays requests to the parent and replies
//! back.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::poll::PollTimeout;
use proto::{
    Channel, ControlRequest, ControlResponse, ControlToParent, Credentials, ErrorCode, ErrorReply,
    ParentToControl, Received,
};
use rustix::net::{
    AddressFamily, SocketAddrUnix, SocketFlags, SocketType, accept_with, bind, connect, listen,
    socket_with, sockopt,
};

use crate::privsep;

/// Clients served at once; more connections are closed on accept.
const MAX_CLIENTS: usize = 256;

struct Client {
    channel: Channel,
    credentials: Credentials,
}

struct Control {
    parent: Channel,
    listener: OwnedFd,
    clients: BTreeMap<u32, Client>,
    next_client_id: u32,
}

/// Runs the control role; returns the process exit status.
pub fn main(flags: &crate::Flags) -> i32 {
    let parent = match privsep::inherited_channel() {
        Ok(channel) => channel,
        Err(e) => {
            log::error!("cannot take the parent channel: {e}");
            return 1;
        }
    };
    let listener = match open_socket(&flags.socket) {
        Ok(listener) => listener,
        Err(e) => {
            log::error!("{}: {e}", flags.socket.display());
            return 1;
        }
    };
    let mut control = Control {
        parent,
        listener,
        clients: BTreeMap::new(),
        next_client_id: 1,
    };
    let code = control.run();
    let _ = std::fs::remove_file(&flags.socket);
    code
}

fn open_socket(path: &Path) -> std::io::Result<OwnedFd> {
    let address = SocketAddrUnix::new(path)?;
    if path.exists() {
        // A socket someone answers on belongs to a running vmd; anything
        // else is left over from one that died.
        let probe = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        if connect(&probe, &address).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another vmd is running on this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    bind(&listener, &address)?;
    // Owner root, mode 0660, as OpenBSD's vmd creates its socket.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    listen(&listener, 16)?;
    Ok(listener)
}

enum Ready {
    Parent,
    Listener,
    Client(u32),
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
                }
            }
        }
    }

    fn wait(&self) -> nix::Result<Vec<Ready>> {
        let mut sources = vec![
            (Ready::Parent, self.parent.as_fd()),
            (Ready::Listener, self.listener.as_fd()),
        ];
        for (&id, client) in &self.clients {
            sources.push((Ready::Client(id), client.channel.as_fd()));
        }
        crate::event::wait_ready(sources, PollTimeout::NONE)
    }

    fn accept(&mut self) {
        let socket = match accept_with(&self.listener, SocketFlags::CLOEXEC) {
            Ok(socket) => socket,
            Err(e) => {
                log::debug!("accept failed: {e}");
                return;
            }
        };
        if self.clients.len() >= MAX_CLIENTS {
            log::warn!("too many clients ({MAX_CLIENTS}); closing a new connection");
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
        if let Some(client) = self.clients.get(&id)
            && client.channel.send(0, &reply, &[]).is_err()
        {
            self.drop_client(id);
        }
        true
    }
}

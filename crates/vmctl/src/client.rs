//! The connection to vmd's control socket.

use std::os::fd::BorrowedFd;
use std::path::Path;

use proto::{
    Channel, ChannelError, ControlRequest, ControlResponse, ErrorCode, Received, VmStatus,
};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType, connect, socket_with};

/// A connection to vmd.
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects to the control socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, String> {
        let fail =
            |e: std::io::Error| format!("connect: {}: {}", path.display(), proto::error_chain(&e));
        let address = SocketAddrUnix::new(path).map_err(|e| fail(e.into()))?;
        let socket = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| fail(e.into()))?;
        connect(&socket, &address).map_err(|e| fail(e.into()))?;
        Ok(Client {
            channel: Channel::from_fd(socket),
        })
    }

    /// Sends `request` with `fds` attached.
    pub fn send(&self, request: &ControlRequest, fds: &[BorrowedFd<'_>]) -> Result<(), String> {
        self.channel.send(0, request, fds).map_err(|e| {
            // vmd may have sent the reason it closed the connection (too
            // many clients) before the request went out.
            if let Ok(Some(Received {
                message: ControlResponse::Error(reply),
                ..
            })) = self.channel.recv::<ControlResponse>()
                && !reply.detail.is_empty()
            {
                return reply.detail;
            }
            format!(
                "cannot send the request to vmd: {}",
                proto::without_errno(&e.to_string())
            )
        })
    }

    /// Waits for the next reply.
    pub fn receive(&self) -> Result<ControlResponse, String> {
        let mut received = self.channel.recv::<ControlResponse>();
        // A vmd that closed the connection with our request unread (too
        // many clients) resets it; Linux reports the reset before the reply
        // that is still queued, and hands out the reply on the next call.
        if let Err(ChannelError::Io(e)) = &received
            && e.kind() == std::io::ErrorKind::ConnectionReset
        {
            received = self.channel.recv::<ControlResponse>();
        }
        match received {
            Ok(Some(Received { message, .. })) => Ok(message),
            Ok(None) => Err("vmd closed the connection".to_string()),
            Err(e) => Err(format!(
                "unexpected response received from vmd: {}",
                proto::without_errno(&e.to_string())
            )),
        }
    }

    /// Fetches the status of every VM.
    pub fn status(&self) -> Result<Vec<VmStatus>, String> {
        self.send(&ControlRequest::Status, &[])?;
        let mut list = Vec::new();
        loop {
            match self.receive()? {
                ControlResponse::Status(status) => list.push(status),
                ControlResponse::StatusEnd => return Ok(list),
                ControlResponse::Error(reply) if !reply.detail.is_empty() => {
                    return Err(reply.detail);
                }
                _ => return Err("unexpected response received from vmd".to_string()),
            }
        }
    }
}

/// The C library's text for errno `code`, as err(3) prints it.
pub fn strerror(code: ErrorCode) -> String {
    proto::error_chain(&std::io::Error::from_raw_os_error(code.0))
}

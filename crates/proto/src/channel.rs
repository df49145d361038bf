//! One end of a `SOCK_SEQPACKET` socket carrying framed messages and file
//! descriptors.

use std::cell::RefCell;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType, recvmsg,
    sendmsg, socketpair,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest message, header included.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// Most descriptors one message carries.
pub const MAX_FDS: usize = 16;
const HEADER_BYTES: usize = 16;

/// The fixed header of every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Message kind, for logs and filtering before decoding.
    pub kind: u32,
    /// Header plus payload, in bytes.
    pub length: u32,
    /// The client connection or VM the message is about.
    pub peer_id: u32,
    /// The sending process.
    pub pid: u32,
}

impl Header {
    fn to_bytes(self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[0..4].copy_from_slice(&self.kind.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.length.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.peer_id.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.pid.to_le_bytes());
        bytes
    }

    fn from_bytes(bytes: &[u8; HEADER_BYTES]) -> Header {
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        Header {
            kind: word(0),
            length: word(4),
            peer_id: word(8),
            pid: word(12),
        }
    }
}

/// A message type that can be sent on a channel.
pub trait Message: Serialize + DeserializeOwned {
    /// A stable number for the message's variant, put in the header.
    fn kind(&self) -> u32;
}

/// Errors sending or receiving.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The socket call failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The message does not fit the size limit.
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    /// More descriptors than one message may carry.
    #[error("{0} descriptors exceed the limit of {MAX_FDS} per message")]
    TooManyFds(usize),
    /// The packet or its descriptors were cut short by the kernel.
    #[error("message truncated")]
    Truncated,
    /// The header is missing or its length field is wrong.
    #[error("malformed header")]
    MalformedHeader,
    /// The payload does not decode as the expected message type.
    #[error("malformed payload: {0}")]
    MalformedPayload(#[from] postcard::Error),
}

/// A received message with its header and descriptors.
pub struct Received<M> {
    /// The header.
    pub header: Header,
    /// The decoded message.
    pub message: M,
    /// Descriptors that came with it, in the order they were sent.
    pub fds: Vec<OwnedFd>,
}

/// One end of a message socket.
#[derive(Debug)]
pub struct Channel {
    socket: OwnedFd,
}

impl Channel {
    /// Creates a connected pair of channels.
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Channel { socket: a }, Channel { socket: b }))
    }

    /// Wraps an already connected `SOCK_SEQPACKET` socket.
    pub fn from_fd(socket: OwnedFd) -> Channel {
        Channel { socket }
    }

    /// Returns the socket, e.g. to close it or pass it on.
    pub fn into_fd(self) -> OwnedFd {
        self.socket
    }

    /// Sends `message` about `peer_id` with `fds` attached.
    pub fn send<M: Message>(
        &self,
        peer_id: u32,
        message: &M,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ChannelError> {
        if fds.len() > MAX_FDS {
            return Err(ChannelError::TooManyFds(fds.len()));
        }
        let payload = postcard::to_allocvec(message)?;
        let length = HEADER_BYTES + payload.len();
        if length > MAX_MESSAGE_BYTES {
            return Err(ChannelError::TooLarge(length));
        }
        let header = Header {
            kind: message.kind(),
            length: length as u32,
            peer_id,
            pid: std::process::id(),
        }
        .to_bytes();
        let iov = [IoSlice::new(&header), IoSlice::new(&payload)];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            let pushed = control.push(SendAncillaryMessage::ScmRights(fds));
            debug_assert!(pushed, "the buffer has room for MAX_FDS descriptors");
        }
        sendmsg(&self.socket, &iov, &mut control, SendFlags::NOSIGNAL)
            .map_err(std::io::Error::from)?;
        Ok(())
    }

    /// Receives one message; returns None when the other end closed.
    ///
    /// Blocks unless a message is waiting; callers in an event loop call it
    /// only when the socket is readable.
    pub fn recv<M: Message>(&self) -> Result<Option<Received<M>>, ChannelError> {
        thread_local! {
            // Reused by every receive on this thread, so that a long status
            // listing does not allocate and clear a buffer per message.
            static BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0u8; MAX_MESSAGE_BYTES]);
        }
        BUFFER.with_borrow_mut(|buffer| self.recv_into(buffer))
    }

    fn recv_into<M: Message>(
        &self,
        buffer: &mut [u8],
    ) -> Result<Option<Received<M>>, ChannelError> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(buffer)];
        let received = recvmsg(
            &self.socket,
            &mut iov,
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;

        // Take ownership of the descriptors first, so they are closed on
        // every error path below.
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        if received
            .flags
            .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC)
        {
            return Err(ChannelError::Truncated);
        }
        if received.bytes == 0 {
            return Ok(None);
        }
        if received.bytes < HEADER_BYTES {
            return Err(ChannelError::MalformedHeader);
        }
        let header = Header::from_bytes(buffer[..HEADER_BYTES].try_into().expect("16 bytes"));
        if header.length as usize != received.bytes {
            return Err(ChannelError::MalformedHeader);
        }
        let message = postcard::from_bytes(&buffer[HEADER_BYTES..received.bytes])?;
        Ok(Some(Received {
            header,
            message,
            fds,
        }))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::io::{Read, Seek, Write};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum TestMessage {
        Hello(String),
        Number(u64),
    }

    impl Message for TestMessage {
        fn kind(&self) -> u32 {
            match self {
                TestMessage::Hello(_) => 1,
                TestMessage::Number(_) => 2,
            }
        }
    }

    #[test]
    fn message_round_trips_with_header() {
        let (a, b) = Channel::pair().unwrap();
        a.send(7, &TestMessage::Hello("vm1".into()), &[]).unwrap();
        let received: Received<TestMessage> = b.recv().unwrap().unwrap();
        assert_eq!(received.message, TestMessage::Hello("vm1".into()));
        assert_eq!(received.header.kind, 1);
        assert_eq!(received.header.peer_id, 7);
        assert_eq!(received.header.pid, std::process::id());
        assert!(received.fds.is_empty());
    }

    #[test]
    fn descriptors_arrive_in_order() {
        let (a, b) = Channel::pair().unwrap();
        let mut first = tempfile();
        first.write_all(b"first").unwrap();
        let mut second = tempfile();
        second.write_all(b"second").unwrap();
        a.send(0, &TestMessage::Number(2), &[first.as_fd(), second.as_fd()])
            .unwrap();
        let received: Received<TestMessage> = b.recv().unwrap().unwrap();
        let contents: Vec<String> = received
            .fds
            .into_iter()
            .map(|fd| {
                let mut file = std::fs::File::from(fd);
                file.rewind().unwrap();
                let mut text = String::new();
                file.read_to_string(&mut text).unwrap();
                text
            })
            .collect();
        assert_eq!(contents, vec!["first", "second"]);
    }

    #[test]
    fn closed_peer_reads_none() {
        let (a, b) = Channel::pair().unwrap();
        drop(a);
        assert!(b.recv::<TestMessage>().unwrap().is_none());
    }

    #[test]
    fn garbage_payload_is_rejected() {
        let (a, b) = Channel::pair().unwrap();
        let header = Header {
            kind: 1,
            length: 18,
            peer_id: 0,
            pid: 0,
        }
        .to_bytes();
        let mut packet = header.to_vec();
        packet.extend_from_slice(&[0xff, 0xff]);
        rustix::net::send(&a.socket, &packet, SendFlags::empty()).unwrap();
        assert!(matches!(
            b.recv::<TestMessage>(),
            Err(ChannelError::MalformedPayload(_))
        ));
    }

    #[test]
    fn wrong_length_field_is_rejected() {
        let (a, b) = Channel::pair().unwrap();
        let header = Header {
            kind: 1,
            length: 99,
            peer_id: 0,
            pid: 0,
        }
        .to_bytes();
        rustix::net::send(&a.socket, &header, SendFlags::empty()).unwrap();
        assert!(matches!(
            b.recv::<TestMessage>(),
            Err(ChannelError::MalformedHeader)
        ));
    }

    fn tempfile() -> std::fs::File {
        let path = std::env::temp_dir().join(format!(
            "proto-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }
}

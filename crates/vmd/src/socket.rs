//! The control socket: created by the parent before it detaches, so that a
//! second vmd, a missing directory or a bad path is reported on the
//! terminal and vmd does not claim to have started.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::net::{
    AddressFamily, SocketAddrUnix, SocketFlags, SocketType, bind, connect, listen, socket_with,
};

/// A bound, listening control socket and the file it made.
pub struct ControlSocket {
    /// The listening socket, handed to the control process.
    pub listener: OwnedFd,
    path: PathBuf,
    identity: (u64, u64),
}

impl ControlSocket {
    /// Creates the socket at `path`, owned by `uid`:`gid` with mode 0660,
    /// as OpenBSD's vmd does. A socket file that accepts no connection is
    /// left over from a vmd that died, so it is replaced. Any other file is
    /// left alone and reported.
    pub fn create(path: &Path, uid: u32, gid: u32) -> io::Result<ControlSocket> {
        let address = SocketAddrUnix::new(path)?;
        match std::fs::symlink_metadata(path) {
            Ok(metadata) if !metadata.file_type().is_socket() => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a socket",
                ));
            }
            Ok(_) => {
                let probe = socket_with(
                    AddressFamily::UNIX,
                    SocketType::SEQPACKET,
                    SocketFlags::CLOEXEC,
                    None,
                )?;
                if connect(&probe, &address).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another vmd is running on this socket",
                    ));
                }
                std::fs::remove_file(path)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        bind(&listener, &address)?;
        let socket = ControlSocket {
            listener,
            path: path.to_path_buf(),
            identity: identity(path)?,
        };
        // From here on, a failure removes the file again (on drop).
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        listen(&socket.listener, 16)?;
        Ok(socket)
    }
}

impl Drop for ControlSocket {
    // Removes the socket file, unless another vmd has replaced it since.
    fn drop(&mut self) {
        if identity(&self.path).is_ok_and(|now| now == self.identity) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn identity(path: &Path) -> io::Result<(u64, u64)> {
    let metadata = std::fs::symlink_metadata(path)?;
    Ok((metadata.dev(), metadata.ino()))
}

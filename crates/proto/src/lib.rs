//! The messages vmd's processes exchange with each other and with vmctl.
//!
//! # Wire format
//!
//! Every message travels in one `SOCK_SEQPACKET` packet, so message
//! boundaries are kept by the socket. A packet is a 16-byte header followed
//! by a payload:
//!
//! ```text
//! offset  size  field
//! 0       4     kind     message kind (little endian), see `Message::kind`
//! 4       4     length   header plus payload, in bytes
//! 8       4     peer_id  which client or VM the message is about
//! 12      4     pid      sending process
//! 16      ...   payload  the message, encoded with postcard
//! ```
//!
//! File descriptors ride along as `SCM_RIGHTS` ancillary data and are
//! received close-on-exec. Errors cross the wire as an [`ErrorCode`] (the
//! OpenBSD `VMD_*` values and errno numbers) plus detail text; the client
//! chooses the wording.
//!
//! The header layout follows OpenBSD's imsg; the payload encoding does not:
//! compatibility with OpenBSD's vmd on the wire is not a goal.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod channel;
mod error;
mod messages;
pub mod units;

pub use channel::{Channel, ChannelError, Header, MAX_FDS, MAX_MESSAGE_BYTES, Message, Received};
pub use error::{ErrorCode, error_chain, without_errno};
pub use messages::*;

/// Default path of vmd's control socket.
pub const DEFAULT_SOCKET_PATH: &str = "/run/vmd.sock";

/// Longest VM name, in bytes (OpenBSD's VMM_MAX_NAME_LEN minus the NUL).
pub const VM_NAME_MAX: usize = 63;

/// The reason a VM name is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VmNameError {
    /// Longer than [`VM_NAME_MAX`].
    #[error("vm name too long")]
    TooLong,
    /// Empty, or has a character other than letters, digits, `.`, `-`
    /// and `_`, or starts with `.`, `-` or `_`.
    #[error("invalid VM name")]
    Invalid,
}

/// Checks a VM name against OpenBSD's rules.
pub fn check_vm_name(name: &str) -> Result<(), VmNameError> {
    if name.len() > VM_NAME_MAX {
        return Err(VmNameError::TooLong);
    }
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    match name.chars().next() {
        Some(first) if first.is_ascii_alphanumeric() && name.chars().all(valid_char) => Ok(()),
        _ => Err(VmNameError::Invalid),
    }
}

/// Writes to stderr like `eprint!`, but ignores a failed write: a full or
/// broken stderr must not turn an error report into a panic.
#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

/// Writes a line to stderr like `eprintln!`, ignoring a failed write.
#[macro_export]
macro_rules! reportln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn vm_names_follow_openbsd_rules() {
        let cases = [
            ("web1", Ok(())),
            ("a.b-c_d", Ok(())),
            ("9lives", Ok(())),
            ("", Err(VmNameError::Invalid)),
            ("-x", Err(VmNameError::Invalid)),
            (".x", Err(VmNameError::Invalid)),
            ("_x", Err(VmNameError::Invalid)),
            ("a b", Err(VmNameError::Invalid)),
            ("a/b", Err(VmNameError::Invalid)),
        ];
        for (name, expected) in cases {
            assert_eq!(check_vm_name(name), expected, "name {name:?}");
        }
        assert_eq!(check_vm_name(&"a".repeat(63)), Ok(()));
        assert_eq!(check_vm_name(&"a".repeat(64)), Err(VmNameError::TooLong));
    }
}

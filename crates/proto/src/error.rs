//! Error codes sent to clients: OpenBSD's `VMD_*` codes (1001 and up) and
//! errno values, so that vmctl can print OpenBSD's messages.

use serde::{Deserialize, Serialize};

/// A failure reason on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCode(pub i32);

impl ErrorCode {
    /// The BIOS or kernel image could not be opened (VMD_BIOS_MISSING).
    pub const BIOS_MISSING: ErrorCode = ErrorCode(1001);
    /// A disk image could not be opened (VMD_DISK_MISSING).
    pub const DISK_MISSING: ErrorCode = ErrorCode(1002);
    /// Stopping a VM that is not running (VMD_VM_STOP_INVALID).
    pub const VM_STOP_INVALID: ErrorCode = ErrorCode(1004);
    /// The CD-ROM image could not be opened (VMD_CDROM_MISSING).
    pub const CDROM_MISSING: ErrorCode = ErrorCode(1005);
    /// The CD-ROM image is not a regular file (VMD_CDROM_INVALID).
    pub const CDROM_INVALID: ErrorCode = ErrorCode(1006);
    /// The parent of an instance does not exist (VMD_PARENT_INVALID).
    pub const PARENT_INVALID: ErrorCode = ErrorCode(1007);
    /// The VM could not be built or booted, for the reason in the detail
    /// text. Not an OpenBSD code: OpenBSD's vm process only logs such
    /// failures.
    pub const START_FAILED: ErrorCode = ErrorCode(1100);

    /// No such VM (ENOENT).
    pub const NOT_FOUND: ErrorCode = ErrorCode(2);
    /// Interrupted (EINTR).
    pub const INTERRUPTED: ErrorCode = ErrorCode(4);
    /// Permission denied (EPERM).
    pub const NOT_PERMITTED: ErrorCode = ErrorCode(1);
    /// Invalid request (EINVAL).
    pub const INVALID: ErrorCode = ErrorCode(22);
    /// Already running or already being stopped (EALREADY).
    pub const ALREADY: ErrorCode = ErrorCode(114);
    /// Resource busy (EBUSY).
    pub const BUSY: ErrorCode = ErrorCode(16);
    /// No such device, e.g. /dev/kvm is missing (ENODEV).
    pub const NO_DEVICE: ErrorCode = ErrorCode(19);

    /// Returns the code for an I/O error's errno, or EIO.
    pub fn from_io(error: &std::io::Error) -> ErrorCode {
        ErrorCode(error.raw_os_error().unwrap_or(5))
    }
}

/// Joins an error and its chain of sources with ": ", as err(3) prints
/// them: `disk /var/vm/a.qcow2: cannot read metadata: Input/output error`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    without_errno(&text)
}

/// Removes the " (os error N)" that Rust appends to system error texts,
/// so that messages read as err(3) prints them.
pub fn without_errno(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(" (os error ") {
        let after = &rest[start + " (os error ".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        plain.push_str(&rest[..start]);
        if digits > 0 && after[digits..].starts_with(')') {
            rest = &after[digits + 1..];
        } else {
            plain.push_str(" (os error ");
            rest = after;
        }
    }
    plain.push_str(rest);
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_suffixes_are_removed() {
        assert_eq!(
            without_errno("a: No such file or directory (os error 2): b (os error 13)"),
            "a: No such file or directory: b"
        );
        assert_eq!(without_errno("kept (os error x)"), "kept (os error x)");
        let io = std::io::Error::from_raw_os_error(2);
        assert_eq!(error_chain(&io), "No such file or directory");
    }
}

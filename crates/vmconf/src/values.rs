//! Parsers and checks for option values: sizes, MAC addresses, prefixes and
//! names. Pure functions; each error is a message ready to print after the
//! option's context.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::config::{
    Ipv4Prefix, Ipv6Prefix, MAX_MEMORY_BYTES, MAX_NAME_LEN, MIN_MEMORY_BYTES, MacAddress,
};

const MIB: u64 = 1024 * 1024;

/// Longest Linux interface name (IFNAMSIZ less the terminating NUL).
pub(crate) const MAX_INTERFACE_NAME_LEN: usize = 15;

/// Longest path accepted for files (Linux's PATH_MAX less the NUL).
pub(crate) const MAX_PATH_LEN: usize = 4095;

/// Parses a size the way OpenBSD's scan_scaled(3) does: a decimal number
/// with an optional fraction and an optional unit B, K, M, G, T, P or E
/// (powers of 1024, either case). Returns the size in bytes.
pub(crate) fn parse_scaled_size(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "invalid memory size \"{text}\": use a number with an optional unit B, K, M, G, T, P or E"
        )
    };
    let (number, unit) = match text.char_indices().last() {
        Some((index, last)) if last.is_ascii_alphabetic() => (&text[..index], Some(last)),
        _ => (text, None),
    };
    let shift = match unit.map(|unit| unit.to_ascii_uppercase()) {
        None | Some('B') => 0,
        Some('K') => 10,
        Some('M') => 20,
        Some('G') => 30,
        Some('T') => 40,
        Some('P') => 50,
        Some('E') => 60,
        Some(_) => return Err(invalid()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return Err(invalid());
    }
    let too_large = || format!("memory size {text} is above the maximum of 128G");
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_mul(1u128 << shift).ok_or_else(too_large)?;

    // Only digits that can still change the byte count matter: 2^60 has 19
    // decimal digits, so later fraction digits are below one byte.
    let mut scale: u128 = 1u128 << shift;
    for digit in fraction.bytes().take(20) {
        bytes += scale * u128::from(digit - b'0') / 10;
        scale /= 10;
        if scale == 0 {
            break;
        }
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Checks a memory size in bytes against the limits and rounds it down to a
/// MiB. `written` is the value as the user wrote it, for the message.
pub(crate) fn check_memory_size(
    bytes: u64,
    written: &str,
    bare_number: bool,
) -> Result<u64, String> {
    if bytes < MIN_MEMORY_BYTES {
        let mut message = format!("memory size {written} is below the minimum of 1M");
        if bare_number && bytes > 0 {
            message.push_str(&format!(
                " (a number without a unit counts bytes: write {written}M for mebibytes)"
            ));
        }
        return Err(message);
    }
    if bytes > MAX_MEMORY_BYTES {
        return Err(format!(
            "memory size {written} is above the maximum of 128G"
        ));
    }
    Ok(bytes / MIB * MIB)
}

/// Formats a byte count that is a whole number of MiB as `NG` or `NM`.
pub(crate) fn format_memory_size(bytes: u64) -> String {
    let mebibytes = bytes / MIB;
    if mebibytes.is_multiple_of(1024) && mebibytes != 0 {
        format!("{}G", mebibytes / 1024)
    } else {
        format!("{mebibytes}M")
    }
}

/// Parses a MAC address like ether_aton(3): six groups of one or two hex
/// digits separated by colons. Multicast and all-zero addresses cannot be
/// the address of an interface, so they are rejected too.
pub(crate) fn parse_mac_address(text: &str) -> Result<MacAddress, String> {
    let invalid = || format!("invalid address: {text}: use six hex bytes like fe:e1:bb:d1:00:01");
    let mut bytes = [0u8; 6];
    let mut groups = text.split(':');
    for byte in &mut bytes {
        let group = groups.next().ok_or_else(invalid)?;
        if group.is_empty() || group.len() > 2 || !group.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        *byte = u8::from_str_radix(group, 16).map_err(|_| invalid())?;
    }
    if groups.next().is_some() {
        return Err(invalid());
    }
    if bytes[0] & 1 != 0 {
        return Err(format!(
            "invalid address: {text}: a multicast address cannot be an interface address"
        ));
    }
    if bytes == [0; 6] {
        return Err(format!(
            "invalid address: {text}: the all-zero address cannot be an interface address"
        ));
    }
    Ok(MacAddress(bytes))
}

/// Parses `local prefix`: `A.B.C.D[/M]` or a shorter classful form such as
/// `10/8` (missing octets are zero), M from 1 to 16 (default 16) because the
/// low 16 bits number the VMs and their interfaces.
pub(crate) fn parse_local_prefix(text: &str) -> Result<Ipv4Prefix, String> {
    let invalid = |reason: &str| format!("invalid local prefix: {text}: {reason}");
    let (address, length) = match text.split_once('/') {
        Some((address, length)) => (address, Some(length)),
        None => (text, None),
    };
    let length = match length {
        None => 16,
        Some(length) => match parse_mask_length(length) {
            Some(length) if (1..=16).contains(&length) => length,
            _ => return Err(invalid("bad mask, use a length from 1 to 16")),
        },
    };
    let octets: Vec<&str> = address.split('.').collect();
    if octets.is_empty() || octets.len() > 4 {
        return Err(invalid(
            "invalid format, use an IPv4 address like 100.64.0.0/10",
        ));
    }
    let mut bytes = [0u8; 4];
    for (byte, octet) in bytes.iter_mut().zip(&octets) {
        let valid =
            !octet.is_empty() && octet.len() <= 3 && octet.bytes().all(|b| b.is_ascii_digit());
        *byte = match octet.parse::<u8>() {
            Ok(value) if valid => value,
            _ => {
                return Err(invalid(
                    "invalid format, use an IPv4 address like 100.64.0.0/10",
                ));
            }
        };
    }
    let address = Ipv4Addr::from(bytes);
    let mask = u32::MAX << (32 - u32::from(length));
    if u32::from(address) & !mask != 0 {
        return Err(invalid(&format!("bits set outside the /{length} mask")));
    }
    Ok(Ipv4Prefix { address, length })
}

/// Parses `local inet6 prefix`: an IPv6 address with an optional length
/// from 0 to 64 (default 64) and no bits outside the mask.
pub(crate) fn parse_inet6_prefix(text: &str) -> Result<Ipv6Prefix, String> {
    let invalid = |reason: &str| format!("invalid local inet6 prefix: {text}: {reason}");
    let (address, length) = match text.split_once('/') {
        Some((address, length)) => (address, Some(length)),
        None => (text, None),
    };
    let length = match length {
        None => 64,
        Some(length) => match parse_mask_length(length) {
            Some(length) if length <= 64 => length,
            _ => return Err(invalid("bad mask, use a length from 0 to 64")),
        },
    };
    let address: Ipv6Addr = address
        .parse()
        .map_err(|_| invalid("invalid format, use an IPv6 prefix like fd00:1::/64"))?;
    let mask = if length == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(length))
    };
    if u128::from(address) & !mask != 0 {
        return Err(invalid(&format!("bits set outside the /{length} mask")));
    }
    Ok(Ipv6Prefix { address, length })
}

/// Parses a mask length of one to three decimal digits; signs and other
/// characters that `str::parse` would accept are rejected.
fn parse_mask_length(text: &str) -> Option<u8> {
    let digits_only =
        !text.is_empty() && text.len() <= 3 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only {
        return None;
    }
    text.parse().ok()
}

/// Checks a VM name: 1 to 63 letters, digits, `.`, `-` and `_`, starting
/// with a letter or digit (OpenBSD's vm_register rules).
pub(crate) fn check_vm_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("vm name is empty".to_owned());
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!(
            "vm name \"{name}\" is too long: {} characters, the maximum is {MAX_NAME_LEN}",
            name.chars().count()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "vm name \"{name}\" contains {bad:?}: use only letters, digits, '.', '-' and '_'"
        ));
    }
    if name.starts_with(['.', '-', '_']) {
        return Err(format!(
            "vm name \"{name}\" must start with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a switch name, which only needs to fit vmd's 64-byte buffers.
pub(crate) fn check_switch_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("switch name is empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "switch name too long: {name}: the maximum is {MAX_NAME_LEN} bytes"
        ));
    }
    Ok(())
}

/// Returns why `name` is not a valid Linux interface name, if it is not:
/// 1 to 15 bytes, not `.` or `..`, without `/`, `:` or whitespace (the
/// kernel's dev_valid_name rules).
pub(crate) fn interface_name_problem(name: &str) -> Option<InterfaceNameProblem> {
    if name.is_empty() || name == "." || name == ".." {
        return Some(InterfaceNameProblem::Invalid);
    }
    if name.len() > MAX_INTERFACE_NAME_LEN {
        return Some(InterfaceNameProblem::TooLong);
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Some(InterfaceNameProblem::Invalid);
    }
    None
}

/// The defect of an invalid interface name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InterfaceNameProblem {
    /// Empty, `.`, `..`, or with a character Linux refuses.
    Invalid,
    /// Longer than [`MAX_INTERFACE_NAME_LEN`] bytes.
    TooLong,
}

/// Checks an interface group name like OpenBSD's priv_validgroup: 1 to 15
/// bytes, not ending in a digit.
pub(crate) fn check_group_name(name: &str) -> Result<(), String> {
    let ends_in_digit = name.ends_with(|c: char| c.is_ascii_digit());
    if name.is_empty() || name.len() > MAX_INTERFACE_NAME_LEN || ends_in_digit {
        return Err(format!(
            "invalid group name: {name}: use 1 to 15 characters, not ending in a digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_sizes_follow_scan_scaled() {
        let cases = [
            ("512M", 512 * MIB),
            ("1G", 1024 * MIB),
            ("1.5g", 1536 * MIB),
            ("2048K", 2 * MIB),
            ("1048576", MIB),
            ("1048576B", MIB),
            ("0.5M", MIB / 2),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_scaled_size(text), Ok(expected), "case {text}");
        }
    }

    #[test]
    fn scaled_size_rejects_garbage() {
        for text in ["", "M", "1X", "1.2.3M", "-1M", "1 M", ".5M", "1MB"] {
            assert!(
                parse_scaled_size(text)
                    .unwrap_err()
                    .starts_with("invalid memory size"),
                "case {text:?}"
            );
        }
    }

    #[test]
    fn memory_below_minimum_is_rejected() {
        assert_eq!(
            check_memory_size(512 * 1024, "512K", false),
            Err("memory size 512K is below the minimum of 1M".to_owned())
        );
    }

    #[test]
    fn memory_is_rounded_down_to_mib() {
        assert_eq!(check_memory_size(MIB + MIB / 2, "1.5M", false), Ok(MIB));
    }

    #[test]
    fn mac_address_accepts_short_groups() {
        assert_eq!(
            parse_mac_address("fe:e1:bb:d1:0:1"),
            Ok(MacAddress([0xfe, 0xe1, 0xbb, 0xd1, 0, 1]))
        );
        assert!(parse_mac_address("fe:e1:bb:d1:00").is_err());
        assert!(parse_mac_address("fe:e1:bb:d1:00:01:02").is_err());
        assert!(parse_mac_address("fe:e1:bb:d1:00:0g").is_err());
    }

    #[test]
    fn local_prefix_masks() {
        let prefix = parse_local_prefix("10/8").unwrap();
        assert_eq!(
            prefix,
            Ipv4Prefix {
                address: Ipv4Addr::new(10, 0, 0, 0),
                length: 8
            }
        );
        let prefix = parse_local_prefix("192.168.0.0").unwrap();
        assert_eq!(prefix.length, 16);
        assert!(parse_local_prefix("10.0.0.0/24").is_err());
        assert!(parse_local_prefix("10.0.0.0/0").is_err());
        assert!(parse_local_prefix("10.1.0.0/8").is_err());
        assert!(parse_local_prefix("256.0.0.0/8").is_err());
    }

    #[test]
    fn inet6_prefix_masks() {
        let prefix = parse_inet6_prefix("fd00:1::/48").unwrap();
        assert_eq!(prefix.length, 48);
        assert_eq!(parse_inet6_prefix("fd00::").unwrap().length, 64);
        assert!(parse_inet6_prefix("fd00::/65").is_err());
        assert!(parse_inet6_prefix("fd00::1/64").is_err());
        assert!(parse_inet6_prefix("10.0.0.0/8").is_err());
    }

    #[test]
    fn vm_name_rules() {
        assert_eq!(check_vm_name("web-1.example_a"), Ok(()));
        assert_eq!(check_vm_name("1abc"), Ok(()));
        assert!(check_vm_name("-abc").is_err());
        assert!(check_vm_name("a b").is_err());
        assert!(check_vm_name(&"a".repeat(64)).is_err());
        assert_eq!(check_vm_name(&"a".repeat(63)), Ok(()));
    }
}

//! The normalized vm.conf text of a [`Config`] (`vmd -nv`): macros and
//! includes expanded, paths resolved, defaults left out, one option per
//! line. Parsing the output gives the same configuration and the same text.

use std::fmt::{self, Write};
use std::path::Path;

use crate::config::{
    AllowInstance, BootDevice, Config, Disk, DiskFormat, Globals, Interface, Owner, Principal,
    Switch, Vm,
};
use crate::lexer;
use crate::values::format_memory_size;

/// Writes `text` as a vm.conf string that reads back unchanged.
///
/// Inside quotes the lexer treats a backslash before `"`, a space or a tab
/// as an escape and keeps it before anything else, so only those cases need
/// an extra backslash. A string ending in a backslash cannot be quoted at
/// all, because the backslash would escape the closing quote. Such strings
/// come only from unquoted words like `a\\`, so their tail is written as an
/// unquoted word again, after a quoted head if there is one.
pub(crate) fn quote(text: &str) -> String {
    if !text.ends_with('\\') {
        return quote_plain(text);
    }
    match unquoted_tail_start(text) {
        Some(0) => unquoted_word(text),
        Some(start) => format!(
            "{} {}",
            quote_plain(&text[..start]),
            unquoted_word(&text[start..])
        ),
        None => quote_plain(text),
    }
}

fn quote_plain(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    let mut chars = text.chars().peekable();
    while let Some(char) = chars.next() {
        match char {
            '"' => quoted.push_str("\\\""),
            '\\' if matches!(chars.peek(), Some(' ' | '\t')) => quoted.push_str("\\\\"),
            _ => quoted.push(char),
        }
    }
    quoted.push('"');
    quoted
}

/// Returns the first index from which `text` can be written as an unquoted
/// word: every byte after it may continue a word, the byte at it may start
/// one, and the quoted head before it does not end in a backslash.
fn unquoted_tail_start(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut word_start = bytes.len();
    while word_start > 0 && lexer::continues_word(bytes[word_start - 1]) {
        word_start -= 1;
    }
    (word_start..bytes.len()).find(|&start| {
        lexer::starts_word(bytes[start]) && (start == 0 || bytes[start - 1] != b'\\')
    })
}

/// Writes a word unquoted; outside quotes a backslash escapes the next
/// byte, so each backslash is doubled.
fn unquoted_word(text: &str) -> String {
    text.replace('\\', "\\\\")
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

fn principal_text(principal: &Principal) -> String {
    match &principal.name {
        Some(name) => name.clone(),
        None => principal.id.to_string(),
    }
}

/// Writes an owner as the grammar's `owner_id`: a bare number for a uid
/// written as a number, otherwise a quoted `user[:group]` or `:group`.
fn owner_text(owner: &Owner) -> String {
    if let (Some(user), None) = (&owner.user, &owner.group)
        && user.name.is_none()
    {
        return user.id.to_string();
    }
    let mut text = owner.user.as_ref().map(principal_text).unwrap_or_default();
    if let Some(group) = &owner.group {
        text.push(':');
        text.push_str(&principal_text(group));
    }
    quote(&text)
}

fn write_globals(out: &mut String, globals: &Globals) -> fmt::Result {
    if let Some(prefix) = &globals.local_prefix {
        let prefix = prefix.value;
        writeln!(out, "local prefix \"{}/{}\"", prefix.address, prefix.length)?;
    }
    if let Some(inet6) = &globals.local_inet6 {
        match inet6.value {
            Some(prefix) => writeln!(
                out,
                "local inet6 prefix \"{}/{}\"",
                prefix.address, prefix.length
            )?,
            None => writeln!(out, "local inet6")?,
        }
    }
    if let Some(owner) = &globals.socket_owner {
        writeln!(out, "socket owner {}", owner_text(&owner.value))?;
    }
    if let Some(staggered) = &globals.staggered_start {
        let value = staggered.value;
        writeln!(
            out,
            "staggered start parallel {} delay {}",
            value.parallel, value.delay_seconds
        )?;
    }
    Ok(())
}

fn write_switch(out: &mut String, switch: &Switch) -> fmt::Result {
    writeln!(out, "switch {} {{", quote(&switch.name))?;
    writeln!(out, "\tinterface {}", quote(&switch.interface))?;
    if let Some(group) = &switch.group {
        writeln!(out, "\tgroup {}", quote(group))?;
    }
    if switch.locked_lladdr {
        writeln!(out, "\tlocked lladdr")?;
    }
    if let Some(rdomain) = switch.rdomain {
        writeln!(out, "\trdomain {rdomain}")?;
    }
    if !switch.up {
        writeln!(out, "\tdown")?;
    }
    if !switch.enabled {
        writeln!(out, "\tdisable")?;
    }
    writeln!(out, "}}")
}

fn write_disk(out: &mut String, disk: &Disk) -> fmt::Result {
    write!(out, "\tdisk {}", quote_path(&disk.path))?;
    match disk.format {
        Some(DiskFormat::Raw) => writeln!(out, " format raw"),
        Some(DiskFormat::Qcow2) => writeln!(out, " format qcow2"),
        None => writeln!(out),
    }
}

fn write_interface(out: &mut String, interface: &Interface) -> fmt::Result {
    let mut options = Vec::new();
    if let Some(switch) = &interface.switch {
        options.push(format!("switch {}", quote(switch)));
    }
    if let Some(group) = &interface.group {
        options.push(format!("group {}", quote(group)));
    }
    match (interface.locked, interface.lladdr) {
        (true, Some(address)) => options.push(format!("locked lladdr \"{address}\"")),
        (true, None) => options.push("locked lladdr".to_owned()),
        (false, Some(address)) => options.push(format!("lladdr \"{address}\"")),
        (false, None) => {}
    }
    if let Some(rdomain) = interface.rdomain {
        options.push(format!("rdomain {rdomain}"));
    }
    if !interface.up {
        options.push("down".to_owned());
    }

    out.push('\t');
    if interface.local {
        out.push_str("local ");
    }
    out.push_str("interface");
    if let Some(name) = &interface.name {
        write!(out, " {}", quote(name))?;
    }
    if options.is_empty() {
        return writeln!(out);
    }
    writeln!(out, " {{")?;
    for option in options {
        writeln!(out, "\t\t{option}")?;
    }
    writeln!(out, "\t}}")
}

fn write_allow_instance(out: &mut String, allow: &AllowInstance) -> fmt::Result {
    let flags = [
        (allow.boot, "boot"),
        (allow.memory, "memory"),
        (allow.interface, "interface"),
        (allow.disk, "disk"),
        (allow.cdrom, "cdrom"),
        (allow.instance, "instance"),
    ];
    let mut permissions: Vec<String> = flags
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| (*name).to_owned())
        .collect();
    if let Some(owner) = &allow.owner {
        permissions.push(format!("owner {}", owner_text(owner)));
    }
    if permissions.is_empty() {
        // `allow instance` always names at least one permission; with only
        // repeated lines that all failed nothing is left to write.
        return Ok(());
    }
    writeln!(out, "\tallow instance {{ {} }}", permissions.join(", "))
}

fn write_vm(out: &mut String, vm: &Vm) -> fmt::Result {
    match &vm.instance_of {
        Some(parent) => writeln!(out, "vm {} instance {} {{", quote(parent), quote(&vm.name))?,
        None => writeln!(out, "vm {} {{", quote(&vm.name))?,
    }
    if !vm.enabled {
        writeln!(out, "\tdisable")?;
    }
    if let Some(owner) = &vm.owner {
        writeln!(out, "\towner {}", owner_text(owner))?;
    }
    if let Some(bytes) = vm.memory_bytes {
        writeln!(out, "\tmemory {}", format_memory_size(bytes))?;
    }
    if let Some(cpus) = vm.cpus {
        writeln!(out, "\tcpus {cpus}")?;
    }
    write_boot(out, vm)?;
    if let Some(cdrom) = &vm.cdrom {
        writeln!(out, "\tcdrom {}", quote_path(cdrom))?;
    }
    for disk in &vm.disks {
        write_disk(out, disk)?;
    }
    if let Some(count) = vm.interface_count {
        writeln!(out, "\tinterfaces {count}")?;
    }
    for interface in &vm.interfaces {
        write_interface(out, interface)?;
    }
    if let Some(allow) = &vm.allow_instance {
        write_allow_instance(out, allow)?;
    }
    writeln!(out, "}}")
}

fn write_boot(out: &mut String, vm: &Vm) -> fmt::Result {
    if let Some(boot) = &vm.boot {
        writeln!(out, "\tboot {}", quote_path(boot))?;
    }
    if let Some(initrd) = &vm.initrd {
        writeln!(out, "\tinitrd {}", quote_path(initrd))?;
    }
    if let Some(cmdline) = &vm.cmdline {
        writeln!(out, "\tcmdline {}", quote(cmdline))?;
    }
    if let Some(device) = vm.boot_device {
        let device = match device {
            BootDevice::Cdrom => "cdrom",
            BootDevice::Disk => "disk",
            BootDevice::Net => "net",
        };
        writeln!(out, "\tboot device {device}")?;
    }
    Ok(())
}

impl fmt::Display for Config {
    /// Writes the configuration in normalized vm.conf syntax: globals, then
    /// switches, then VMs, separated by blank lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sections = Vec::new();
        let mut globals = String::new();
        write_globals(&mut globals, &self.globals)?;
        if !globals.is_empty() {
            sections.push(globals);
        }
        for switch in &self.switches {
            let mut text = String::new();
            write_switch(&mut text, switch)?;
            sections.push(text);
        }
        for vm in &self.vms {
            let mut text = String::new();
            write_vm(&mut text, vm)?;
            sections.push(text);
        }
        f.write_str(&sections.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::{Lexer, Macros, TokenKind};

    fn lex_one(text: &str) -> TokenKind {
        Lexer::new(text.as_bytes())
            .next_token(&mut Macros::default())
            .kind
    }

    /// Lexes `text` and concatenates its strings, as the grammar's `string`.
    fn lex_string(text: &str) -> String {
        let mut lexer = Lexer::new(text.as_bytes());
        let mut macros = Macros::default();
        let mut value = String::new();
        loop {
            match lexer.next_token(&mut macros).kind {
                TokenKind::Quoted(part) | TokenKind::Word(part) => value.push_str(&part),
                TokenKind::Eof => return value,
                other => panic!("unexpected token {other:?} in {text:?}"),
            }
        }
    }

    #[test]
    fn trailing_backslash_is_written_unquoted() {
        assert_eq!(quote("a\\"), "a\\\\");
        assert_eq!(quote("x y\\"), "\"x \" y\\\\");
        for text in ["a\\", "x y\\", "\\a_\\", "a\\b\\", "5\\", "a\"\\"] {
            assert_eq!(lex_string(&quote(text)), text, "case {text:?}");
        }
    }

    #[test]
    fn quoted_strings_read_back_unchanged() {
        let cases = [
            "plain",
            "with space",
            "a\"b",
            "back\\slash",
            "a\\ b",
            "a\\\tb",
            "a\\\"b",
            "$x #y",
            "\\\\ x",
        ];
        for text in cases {
            assert_eq!(
                lex_one(&quote(text)),
                TokenKind::Quoted(text.to_owned()),
                "case {text:?}"
            );
        }
    }
}

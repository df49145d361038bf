//! `vm NAME { ... }` and `vm PARENT instance NAME { ... }` blocks, with
//! their interface and `allow instance` sub-grammars and the checks that
//! need the whole block.

use std::path::PathBuf;

use super::{Cursor, INTERFACE_BLOCK, Parsed, Parser};
use crate::config::{
    AllowInstance, BootDevice, Disk, DiskFormat, Interface, MAX_CPUS, MAX_DISKS, MAX_INTERFACES, Vm,
};
use crate::host;
use crate::lexer::{Keyword, TokenKind};
use crate::values::{self, InterfaceNameProblem, MAX_INTERFACE_NAME_LEN, MAX_PATH_LEN};

/// The options of a vm block, for suggestions.
pub(crate) const VM_OPTIONS: &[&str] = &[
    "enable",
    "disable",
    "boot",
    "cdrom",
    "disk",
    "local",
    "interface",
    "interfaces",
    "memory",
    "owner",
    "allow",
    "cpus",
    "initrd",
    "cmdline",
];

/// The Linux extensions, keywords only at the start of a vm option.
pub(crate) const LINUX_VM_OPTIONS: &[&str] = &["cpus", "initrd", "cmdline"];

const INTERFACE_OPTIONS: &[&str] = &[
    "switch", "group", "locked", "lladdr", "rdomain", "up", "down",
];

const INSTANCE_PERMISSIONS: &[&str] = &[
    "boot",
    "memory",
    "interface",
    "disk",
    "cdrom",
    "instance",
    "owner",
];

/// Maximum kernel command line length: x86's COMMAND_LINE_SIZE of 2048
/// bytes less the NUL.
const MAX_CMDLINE_BYTES: usize = 2047;

/// A vm block being parsed: the VM and how often each option was written,
/// counting lines that had errors, so that later checks do not pile a second
/// error onto the first.
struct VmState {
    vm: Vm,
    boot_lines: usize,
    disk_lines: usize,
    cdrom_lines: usize,
    interface_lines: usize,
    initrd_or_cmdline_line: Option<u32>,
}

impl Parser {
    /// Parses a vm block and registers the VM unless its name, its parent or
    /// the block as a whole has errors.
    pub(super) fn parse_vm(&mut self, cursor: &mut Cursor<'_>) -> Parsed<()> {
        let line = self.next(cursor).line;
        self.reject_keyword_macro(cursor, Keyword::Vm, line)?;
        let first = self.parse_string(cursor, "a vm name")?;
        let (name, parent) = if self.accept_keyword(cursor, Keyword::Instance) {
            (
                self.parse_string(cursor, "an instance name after instance")?,
                Some(first),
            )
        } else {
            (first, None)
        };
        let valid = self.check_vm_header(cursor, line, &name, parent.as_deref());
        self.context = Some(format!("vm \"{name}\""));
        self.expect_open_brace(cursor, "vm")?;

        let mut state = VmState {
            vm: new_vm(name.clone(), self.location(cursor, line), parent),
            boot_lines: 0,
            disk_lines: 0,
            cdrom_lines: 0,
            interface_lines: 0,
            initrd_or_cmdline_line: None,
        };
        self.parse_block(cursor, &mut state, "block", line, Self::parse_vm_option)?;

        let errors_before = self.error_count();
        self.check_vm_block(cursor, line, &state);
        if valid && self.error_count() == errors_before {
            self.vm_index.insert(name, self.config.vms.len());
            self.config.vms.push(state.vm);
        }
        Ok(())
    }

    /// Checks the name, duplicates and the parent of an instance; returns
    /// whether the VM may be registered.
    fn check_vm_header(
        &mut self,
        cursor: &Cursor<'_>,
        line: u32,
        name: &str,
        parent: Option<&str>,
    ) -> bool {
        let mut valid = true;
        if let Err(message) = values::check_vm_name(name) {
            self.error(cursor, line, message);
            valid = false;
        }
        if let Some(&index) = self.vm_index.get(name) {
            let previous = self.config.vms[index].location.clone();
            self.error(
                cursor,
                line,
                format!("vm \"{name}\" is already defined at {previous}"),
            );
            valid = false;
        }
        if let Some(parent) = parent
            && !self.vm_index.contains_key(parent)
        {
            let message = format!(
                "instance of undefined vm \"{parent}\": define the vm \"{parent}\" block before its instances"
            );
            self.error(cursor, line, message);
            valid = false;
        }
        valid
    }

    fn parse_vm_option(&mut self, cursor: &mut Cursor<'_>, state: &mut VmState) -> Parsed<()> {
        let token = self.next(cursor);
        let line = token.line;
        match token.kind {
            TokenKind::Keyword(Keyword::Enable) => state.vm.enabled = true,
            TokenKind::Keyword(Keyword::Disable) => state.vm.enabled = false,
            TokenKind::Keyword(keyword @ (Keyword::Sev | Keyword::Seves)) => {
                let message = format!(
                    "{} is not supported on Linux: AMD SEV guests need OpenBSD's psp(4); remove the line",
                    keyword.as_str()
                );
                return Err(self.error(cursor, line, message));
            }
            TokenKind::Keyword(Keyword::Disk) => self.parse_disk(cursor, state, line)?,
            TokenKind::Keyword(Keyword::Local) => {
                self.expect_keyword(cursor, Keyword::Interface, "local")?;
                self.parse_interface(cursor, state, line, true)?;
            }
            TokenKind::Keyword(Keyword::Interface) => {
                self.parse_interface(cursor, state, line, false)?
            }
            TokenKind::Keyword(Keyword::Boot) => self.parse_boot(cursor, state, line)?,
            TokenKind::Keyword(Keyword::Cdrom) => self.parse_cdrom(cursor, state, line)?,
            TokenKind::Keyword(Keyword::Interfaces) => {
                self.parse_interface_count(cursor, state, line)?
            }
            TokenKind::Keyword(Keyword::Memory) => self.parse_memory(cursor, state, line)?,
            TokenKind::Keyword(Keyword::Owner) => state.vm.owner = Some(self.parse_owner(cursor)?),
            TokenKind::Keyword(Keyword::Allow) => self.parse_allow_instance(cursor, state)?,
            TokenKind::Word(ref word) if word == "cpus" => self.parse_cpus(cursor, state, line)?,
            TokenKind::Word(ref word) if word == "initrd" => {
                self.parse_initrd(cursor, state, line)?
            }
            TokenKind::Word(ref word) if word == "cmdline" => {
                self.parse_cmdline(cursor, state, line)?
            }
            _ => {
                return Err(self.unknown_option(
                    cursor,
                    token,
                    "vm option",
                    VM_OPTIONS,
                    "a vm option",
                ));
            }
        }
        Ok(())
    }

    /// Parses `disk PATH [format raw|qcow2]`. The path is resolved with
    /// realpath now; without `format`, the format is detected from the image
    /// when the VM starts.
    fn parse_disk(
        &mut self,
        cursor: &mut Cursor<'_>,
        state: &mut VmState,
        line: u32,
    ) -> Parsed<()> {
        state.disk_lines += 1;
        let written = self.parse_string(cursor, "a disk image path")?;
        let mut format = None;
        if self.accept_keyword(cursor, Keyword::Format) {
            let name = self.parse_string(cursor, "a disk format (raw or qcow2)")?;
            format = match name.to_ascii_lowercase().as_str() {
                "raw" => Some(DiskFormat::Raw),
                "qcow2" => Some(DiskFormat::Qcow2),
                _ => {
                    let message = format!("unrecognized disk format {name}: use raw or qcow2");
                    return Err(self.error(cursor, line, message));
                }
            };
        }

        if state.disk_lines > MAX_DISKS {
            let message = format!("disk \"{written}\": too many disks: the maximum is {MAX_DISKS}");
            return Err(self.error(cursor, line, message));
        }
        if written.len() > MAX_PATH_LEN {
            return Err(self.error(cursor, line, "disk path too long".to_owned()));
        }
        let path = host::resolve_disk(&written, &mut self.directories)
            .map_err(|reason| self.error(cursor, line, format!("disk \"{written}\": {reason}")))?;
        let location = self.location(cursor, line);
        state.vm.disks.push(Disk {
            path,
            format,
            location,
        });
        Ok(())
    }

    /// Parses `boot PATH` or `boot device cdrom|disk|net`.
    fn parse_boot(
        &mut self,
        cursor: &mut Cursor<'_>,
        state: &mut VmState,
        line: u32,
    ) -> Parsed<()> {
        if self.accept_keyword(cursor, Keyword::Device) {
            let token = self.next(cursor);
            state.vm.boot_device = Some(match token.kind {
                TokenKind::Keyword(Keyword::Cdrom) => BootDevice::Cdrom,
                TokenKind::Keyword(Keyword::Disk) => BootDevice::Disk,
                TokenKind::Keyword(Keyword::Net) => BootDevice::Net,
                _ => {
                    return Err(self.syntax_error(
                        cursor,
                        token,
                        "cdrom, disk or net after boot device",
                    ));
                }
            });
            return Ok(());
        }
        state.boot_lines += 1;
        let written = self.parse_string(cursor, "a kernel or firmware path after boot")?;
        if state.boot_lines > 1 {
            return Err(self.error(cursor, line, "kernel specified more than once".to_owned()));
        }
        let path = self.resolve_image(cursor, line, "boot", &written)?;
        state.vm.boot = Some(path);
        Ok(())
    }

    /// Resolves a `boot` or `initrd` file with realpath.
    fn resolve_image(
        &mut self,
        cursor: &Cursor<'_>,
        line: u32,
        keyword: &str,
        written: &str,
    ) -> Parsed<PathBuf> {
        if written.len() > MAX_PATH_LEN {
            return Err(self.error(cursor, line, format!("{keyword} path too long")));
        }
        self.resolve_regular_file(written).map_err(|reason| {
            self.error(cursor, line, format!("{keyword} \"{written}\": {reason}"))
        })
    }

    /// Parses `cdrom PATH`. The image is opened when the VM starts, as in
    /// OpenBSD, so it is neither resolved nor checked here.
    fn parse_cdrom(
        &mut self,
        cursor: &mut Cursor<'_>,
        state: &mut VmState,
        line: u32,
    ) -> Parsed<()> {
        state.cdrom_lines += 1;
        let written = self.parse_string(cursor, "an ISO image path after cdrom")?;
        if state.cdrom_lines > 1 {
            return Err(self.error(cursor, line, "cdrom specified more than once".to_owned()));
        }
        if written.len() > MAX_PATH_LEN {
            return Err(self.error(cursor, line, "cdrom name too long".to_owned()));
        }
        state.vm.cdrom = Some(PathBuf::from(written));
        Ok(())
    }

    fn parse_interface_count(
        &mut self,
        cursor: &mut Cursor<'_>,
        state: &mut VmState,
        line: u32,
    ) -> Parsed<()> {
        let (count, _) = self.parse_number(cursor, "a number of interfaces")?;
        if state.vm.interface_count.is_some() {
            return Err(self.error(
                cursor,
                line,
                "interfaces specified more than once".to_owned(),
            ));
        }
        match u8::try_from(count) {
            Ok(count) if usize::from(count) <= MAX_INTERFACES => {
                state.vm.interface_count = Some(count);
                Ok(())
            }
            _ => {
                let message = format!("too many interfaces: {count}: use 0 to {MAX_INTERFACES}");
                Err(self.error(cursor, line, message))
            }
        }
    }

    /// Parses `memory N` (bytes) or `memory SIZE` (with a unit), checks the
    /// limits and rounds down to a MiB with a warning.
    fn parse_memory(
        &mut self,
        cursor: &mut Cursor<'_>,
        state: &mut VmState,
        line: u32,
    ) -> Parsed<()> {
        let token = self.next(cursor);
        let (bytes, written, bare_number) = match token.kind {
            TokenKind::Number(number) => match u64::try_from(number) {
                Ok(bytes) => (bytes, number.to_string(), true),
                Err(_) => {
                    return Err(self.error(cursor, line, format!("invalid memory size {number}")));
                }
            },
            TokenKind::Word(text) | TokenKind::Quoted(text) => {
                let bytes = values::parse_scaled_size(&text)
                    .map_err(|message| self.error(cursor, line, message))?;
                (bytes, text, false)
            }
            _ => return Err(self.syntax_error(cursor, token, "a memory size like 512M or 2G")),
        };
        if state.vm.memory_bytes.is_some() {
            return Err(self.error(cursor, line, "memory specified more than once".to_owned()));
        }
        let rounded = values::check_memory_size(bytes, &written, bare_number)
            .map_err(|message| self.error(cursor, line, message))?;
        if rounded != bytes {
            let location = self.location(cursor, line);
            let message = format!(
                "memory size {written} rounded down to {}",
                values::format_memory_size(rounded)
            );
            self.warning(location, message);
        }
        state.vm.memory_bytes = Some(rounded);
        Ok(())
    }

    /// Parses `cpus N` (Linux extension): 1 to the host's online CPUs, at
    /// most 64.
    fn parse_cpus(
        &mut self,
        cursor: &mut Cursor<'_>,
        state: &mut VmState,
        line: u32,
    ) -> Parsed<()> {
        let (cpus, _) = self.parse_number(cursor, "a number of vCPUs after cpus")?;
        if state.vm.cpus.is_some() {
            return Err(self.error(cursor, line, "cpus specified more than once".to_owned()));
        }
        if cpus < 1 {
            return Err(self.error(
                cursor,
                line,
                format!("cpus {cpus} is invalid: a vm needs at least 1 vCPU"),
            ));
        }
        if cpus > i64::from(MAX_CPUS) {
            let message = format!("cpus {cpus} is above the maximum of {MAX_CPUS}");
            return Err(self.error(cursor, line, message));
        }
        let online = self.host.online_cpus;
        if cpus as usize > online {
            let message = format!("cpus {cpus} is more than the {online} online CPUs of this host");
            return Err(self.error(cursor, line, message));
        }
        state.vm.cpus = Some(cpus as u8);
        Ok(())
    }

    /// Parses `initrd PATH` (Linux extension), resolved with realpath.
    fn parse_initrd(
        &mut self,
        cursor: &mut Cursor<'_>,
        state: &mut VmState,
        line: u32,
    ) -> Parsed<()> {
        state.initrd_or_cmdline_line.get_or_insert(line);
        let written = self.parse_string(cursor, "an initrd path")?;
        if state.vm.initrd.is_some() {
            return Err(self.error(cursor, line, "initrd specified more than once".to_owned()));
        }
        let path = self.resolve_image(cursor, line, "initrd", &written)?;
        state.vm.initrd = Some(path);
        Ok(())
    }

    /// Parses `cmdline STRING` (Linux extension): the kernel command line.
    fn parse_cmdline(
        &mut self,
        cursor: &mut Cursor<'_>,
        state: &mut VmState,
        line: u32,
    ) -> Parsed<()> {
        state.initrd_or_cmdline_line.get_or_insert(line);
        let cmdline = self.parse_string(cursor, "a kernel command line")?;
        if state.vm.cmdline.is_some() {
            return Err(self.error(cursor, line, "cmdline specified more than once".to_owned()));
        }
        if cmdline.len() > MAX_CMDLINE_BYTES {
            let message = format!(
                "cmdline is too long: {} bytes, the maximum is {MAX_CMDLINE_BYTES}",
                cmdline.len()
            );
            return Err(self.error(cursor, line, message));
        }
        state.vm.cmdline = Some(cmdline);
        Ok(())
    }

    /// Parses `[local] interface [NAME] [options]`; `local` and `interface`
    /// have been consumed. Options follow inline (commas optional) or in
    /// braces, one per line.
    fn parse_interface(
        &mut self,
        cursor: &mut Cursor<'_>,
        state: &mut VmState,
        line: u32,
        local: bool,
    ) -> Parsed<()> {
        state.interface_lines += 1;
        if state.interface_lines > MAX_INTERFACES {
            let message = format!(
                "too many interfaces: {}: the maximum is {MAX_INTERFACES}",
                state.interface_lines
            );
            return Err(self.error(cursor, line, message));
        }
        let mut interface = Interface {
            location: self.location(cursor, line),
            local,
            name: None,
            switch: None,
            group: None,
            locked: false,
            lladdr: None,
            rdomain: None,
            up: true,
        };
        if let TokenKind::Word(_) | TokenKind::Quoted(_) = self.peek(cursor).kind {
            let name = self.parse_single_string(cursor, "an interface name")?;
            interface.name = self.check_tap_name(cursor, line, name)?;
        }

        if self.peek(cursor).kind == TokenKind::OpenBrace {
            let open_line = self.next(cursor).line;
            self.parse_block(
                cursor,
                &mut interface,
                INTERFACE_BLOCK,
                open_line,
                Self::parse_interface_option,
            )?;
        } else {
            while is_interface_option(&self.peek(cursor).kind) {
                self.parse_interface_option(cursor, &mut interface)?;
                if self.peek(cursor).kind == TokenKind::Comma {
                    self.next(cursor);
                }
            }
        }
        state.vm.interfaces.push(interface);
        Ok(())
    }

    /// Checks the tap interface name of a VM interface; `tap` means "any
    /// free tap" and becomes `None`.
    fn check_tap_name(
        &mut self,
        cursor: &Cursor<'_>,
        line: u32,
        name: String,
    ) -> Parsed<Option<String>> {
        if name == "tap" {
            return Ok(None);
        }
        match values::interface_name_problem(&name) {
            None => Ok(Some(name)),
            Some(InterfaceNameProblem::TooLong) => {
                let message = format!(
                    "interface name too long: {name}: the maximum is {MAX_INTERFACE_NAME_LEN} bytes"
                );
                Err(self.error(cursor, line, message))
            }
            Some(InterfaceNameProblem::Invalid) => {
                Err(self.error(cursor, line, format!("invalid interface: {name}")))
            }
        }
    }

    fn parse_interface_option(
        &mut self,
        cursor: &mut Cursor<'_>,
        interface: &mut Interface,
    ) -> Parsed<()> {
        let token = self.next(cursor);
        let line = token.line;
        match token.kind {
            TokenKind::Keyword(Keyword::Switch) => {
                let switch = self.parse_string(cursor, "a switch name")?;
                values::check_switch_name(&switch)
                    .map_err(|message| self.error(cursor, line, message))?;
                interface.switch = Some(switch);
            }
            TokenKind::Keyword(Keyword::Group) => {
                let group = self.parse_string(cursor, "a group name")?;
                values::check_group_name(&group)
                    .map_err(|message| self.error(cursor, line, message))?;
                interface.group = Some(group);
            }
            TokenKind::Keyword(Keyword::Locked) => {
                self.expect_keyword(cursor, Keyword::Lladdr, "locked")?;
                interface.locked = true;
                self.parse_optional_lladdr(cursor, interface, line)?;
            }
            TokenKind::Keyword(Keyword::Lladdr) => {
                self.parse_optional_lladdr(cursor, interface, line)?
            }
            TokenKind::Keyword(Keyword::Rdomain) => {
                interface.rdomain = Some(self.parse_rdomain(cursor)?)
            }
            TokenKind::Keyword(Keyword::Up) => interface.up = true,
            TokenKind::Keyword(Keyword::Down) => interface.up = false,
            _ => {
                return Err(self.unknown_option(
                    cursor,
                    token,
                    "interface option",
                    INTERFACE_OPTIONS,
                    "an interface option",
                ));
            }
        }
        Ok(())
    }

    /// Parses the MAC address that may follow `lladdr`; without one the
    /// guest gets a random address.
    fn parse_optional_lladdr(
        &mut self,
        cursor: &mut Cursor<'_>,
        interface: &mut Interface,
        line: u32,
    ) -> Parsed<()> {
        if let TokenKind::Word(_) | TokenKind::Quoted(_) = self.peek(cursor).kind {
            let text = self.parse_single_string(cursor, "a MAC address")?;
            let address = values::parse_mac_address(&text)
                .map_err(|message| self.error(cursor, line, message))?;
            interface.lladdr = Some(address);
        }
        Ok(())
    }

    /// Parses `allow instance FLAG` or `allow instance { FLAG, ... }`.
    /// Repeated lines add to the permissions, as in OpenBSD.
    fn parse_allow_instance(&mut self, cursor: &mut Cursor<'_>, state: &mut VmState) -> Parsed<()> {
        self.expect_keyword(cursor, Keyword::Instance, "allow")?;
        let mut allow = state.vm.allow_instance.take().unwrap_or_default();
        let result = self.parse_instance_permissions(cursor, &mut allow);
        state.vm.allow_instance = Some(allow);
        result
    }

    fn parse_instance_permissions(
        &mut self,
        cursor: &mut Cursor<'_>,
        allow: &mut AllowInstance,
    ) -> Parsed<()> {
        if self.peek(cursor).kind != TokenKind::OpenBrace {
            return self.parse_instance_permission(cursor, allow);
        }
        self.next(cursor);
        let result = self.parse_instance_permission_list(cursor, allow);
        if result.is_err() {
            // The list's own brace must not end the vm block.
            self.skip_past_close_brace(cursor);
        }
        result
    }

    fn parse_instance_permission_list(
        &mut self,
        cursor: &mut Cursor<'_>,
        allow: &mut AllowInstance,
    ) -> Parsed<()> {
        self.skip_newlines(cursor);
        loop {
            self.parse_instance_permission(cursor, allow)?;
            let token = self.next(cursor);
            match token.kind {
                TokenKind::Comma => self.skip_newlines(cursor),
                TokenKind::Newline => {
                    self.skip_newlines(cursor);
                    if self.peek(cursor).kind == TokenKind::CloseBrace {
                        self.next(cursor);
                        return Ok(());
                    }
                }
                TokenKind::CloseBrace => return Ok(()),
                _ => return Err(self.syntax_error(cursor, token, "\",\", a newline or \"}\"")),
            }
        }
    }

    fn parse_instance_permission(
        &mut self,
        cursor: &mut Cursor<'_>,
        allow: &mut AllowInstance,
    ) -> Parsed<()> {
        let token = self.next(cursor);
        match token.kind {
            TokenKind::Keyword(Keyword::Boot) => allow.boot = true,
            TokenKind::Keyword(Keyword::Memory) => allow.memory = true,
            TokenKind::Keyword(Keyword::Interface) => allow.interface = true,
            TokenKind::Keyword(Keyword::Disk) => allow.disk = true,
            TokenKind::Keyword(Keyword::Cdrom) => allow.cdrom = true,
            TokenKind::Keyword(Keyword::Instance) => allow.instance = true,
            TokenKind::Keyword(Keyword::Owner) => allow.owner = Some(self.parse_owner(cursor)?),
            _ => {
                return Err(self.unknown_option(
                    cursor,
                    token,
                    "instance permission",
                    INSTANCE_PERMISSIONS,
                    "an instance permission",
                ));
            }
        }
        Ok(())
    }

    /// Checks that need the whole block: something to boot from, a kernel
    /// for initrd and cmdline, and the instance rules of OpenBSD's
    /// vm_instance for a configuration loaded by root.
    fn check_vm_block(&mut self, cursor: &Cursor<'_>, line: u32, state: &VmState) {
        let vm = &state.vm;
        if vm.instance_of.is_none() {
            if state.boot_lines + state.disk_lines + state.cdrom_lines == 0 {
                let message =
                    "no boot kernel, disk or cdrom: add a boot, disk or cdrom line".to_owned();
                self.error(cursor, line, message);
            }
            if let Some(extension_line) = state.initrd_or_cmdline_line
                && state.boot_lines == 0
            {
                let message =
                    "initrd and cmdline need a kernel: add a boot line with the kernel".to_owned();
                self.error(cursor, extension_line, message);
            }
            return;
        }
        self.check_instance(cursor, line, vm);
    }

    fn check_instance(&mut self, cursor: &Cursor<'_>, line: u32, vm: &Vm) {
        let Some(parent) = vm
            .instance_of
            .as_ref()
            .and_then(|name| self.vm_index.get(name))
        else {
            return;
        };
        let parent = &self.config.vms[*parent];
        let mut problems = Vec::new();
        if vm.allow_instance.is_some() {
            problems.push("an instance cannot have its own allow instance".to_owned());
        }
        for disk in &vm.disks {
            if parent.disks.iter().any(|other| other.path == disk.path) {
                problems.push(format!(
                    "disk {} cannot be reused: it belongs to vm \"{}\"",
                    disk.path.display(),
                    parent.name
                ));
            }
        }
        for interface in &vm.interfaces {
            let Some(name) = &interface.name else {
                continue;
            };
            if parent
                .interfaces
                .iter()
                .any(|other| other.name.as_ref() == Some(name))
            {
                problems.push(format!(
                    "interface {name} cannot be reused: it belongs to vm \"{}\"",
                    parent.name
                ));
            }
        }
        if let Some(owner) = &vm.owner {
            let parent_uid = parent.owner.as_ref().map_or(0, |owner| owner.uid());
            if owner.uid() != 0 && owner.uid() != parent_uid {
                problems.push(format!(
                    "user mismatch: the owner must be that of vm \"{}\"",
                    parent.name
                ));
            }
            let parent_gid = parent.owner.as_ref().and_then(|owner| owner.gid());
            if let Some(gid) = owner.gid().filter(|gid| *gid != 0)
                && Some(gid) != parent_gid
            {
                problems.push(format!(
                    "group mismatch: the group must be that of vm \"{}\"",
                    parent.name
                ));
            }
        }
        for problem in problems {
            self.error(cursor, line, problem);
        }
    }
}

fn is_interface_option(kind: &TokenKind) -> bool {
    matches!(kind, TokenKind::Keyword(keyword) if INTERFACE_OPTIONS.contains(&keyword.as_str()))
}

fn new_vm(name: String, location: crate::config::Location, instance_of: Option<String>) -> Vm {
    Vm {
        name,
        location,
        instance_of,
        enabled: true,
        boot: None,
        boot_device: None,
        cdrom: None,
        disks: Vec::new(),
        interfaces: Vec::new(),
        interface_count: None,
        memory_bytes: None,
        cpus: None,
        initrd: None,
        cmdline: None,
        owner: None,
        allow_instance: None,
    }
}

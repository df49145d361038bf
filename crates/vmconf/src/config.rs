//! The typed vm.conf model: global options, switches and VMs, each with the
//! file and line it came from. Holds data only; parsing and validation live in
//! the parser, the normalized text form in `dump`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Guest memory of a VM without a `memory` option: 512 MiB, as OpenBSD's
/// `VM_DEFAULT_MEMORY`.
pub const DEFAULT_MEMORY_BYTES: u64 = 512 * MIB;

/// Smallest accepted guest memory: 1 MiB.
pub const MIN_MEMORY_BYTES: u64 = MIB;

/// Largest accepted guest memory: 128 GiB, OpenBSD's `VMM_MAX_VM_MEM_SIZE`.
pub const MAX_MEMORY_BYTES: u64 = 128 * 1024 * MIB;

/// vCPUs of a VM without a `cpus` option.
pub const DEFAULT_CPUS: u8 = 1;

/// Largest accepted `cpus` value, OpenBSD's `VMM_MAX_VCPUS_PER_VM`.
pub const MAX_CPUS: u8 = 64;

/// Disks per VM, OpenBSD's `VM_MAX_DISKS_PER_VM`.
pub const MAX_DISKS: usize = 4;

/// Network interfaces per VM, OpenBSD's `VM_MAX_NICS_PER_VM`.
pub const MAX_INTERFACES: usize = 4;

/// Longest VM or switch name in characters (OpenBSD's 64-byte buffer less the
/// terminating NUL).
pub const MAX_NAME_LEN: usize = 63;

/// Pool for the addresses of `local interface`s when `local prefix` is not
/// set: 100.64.0.0/10, OpenBSD's `VMD_DHCP_PREFIX`.
pub const DEFAULT_LOCAL_PREFIX: Ipv4Prefix = Ipv4Prefix {
    address: Ipv4Addr::new(100, 64, 0, 0),
    length: 10,
};

/// Seconds between two batches of a staggered start when `staggered start`
/// is not set.
pub const DEFAULT_STAGGERED_DELAY_SECONDS: u32 = 30;

const MIB: u64 = 1024 * 1024;

/// Where a configuration item was written: the file (as named on the command
/// line or in the `include` line) and the 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file, as named when it was opened.
    pub file: Arc<Path>,
    /// The 1-based line number.
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A value of a global option together with the place that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value as validated.
    pub value: T,
    /// The line that set it (the last one, when the option is repeated).
    pub location: Location,
}

/// A parsed vm.conf: global options, then switches and VMs in the order they
/// were defined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `local prefix`, `local inet6`, `socket owner`, `staggered start`.
    pub globals: Globals,
    /// `switch` blocks, disabled ones included.
    pub switches: Vec<Switch>,
    /// `vm` blocks, disabled ones and instances included.
    pub vms: Vec<Vm>,
}

impl Config {
    /// Returns the VM named `name`.
    pub fn vm(&self, name: &str) -> Option<&Vm> {
        self.vms.iter().find(|vm| vm.name == name)
    }

    /// Returns the switch named `name`.
    pub fn switch(&self, name: &str) -> Option<&Switch> {
        self.switches.iter().find(|switch| switch.name == name)
    }
}

/// The global options. `None` means the option was not written, and the
/// default described on each field applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Globals {
    /// `local prefix`: the IPv4 pool of local interfaces; default
    /// [`DEFAULT_LOCAL_PREFIX`].
    pub local_prefix: Option<Setting<Ipv4Prefix>>,
    /// `local inet6 [prefix P]`: IPv6 on local interfaces. `Some` with a
    /// `None` prefix means a random ULA /64 chosen at startup. Default: off.
    pub local_inet6: Option<Setting<Option<Ipv6Prefix>>>,
    /// `socket owner`: owner of the control socket; default root, group 0.
    pub socket_owner: Option<Setting<Owner>>,
    /// `staggered start`: default one batch per online CPU every
    /// [`DEFAULT_STAGGERED_DELAY_SECONDS`] seconds.
    pub staggered_start: Option<Setting<StaggeredStart>>,
}

impl Globals {
    /// Returns the local IPv4 prefix in force: the configured one or
    /// [`DEFAULT_LOCAL_PREFIX`].
    pub fn effective_local_prefix(&self) -> Ipv4Prefix {
        self.local_prefix
            .as_ref()
            .map_or(DEFAULT_LOCAL_PREFIX, |setting| setting.value)
    }
}

/// An IPv4 network: address and mask length, with no bits set outside the
/// mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Prefix {
    /// The network address.
    pub address: Ipv4Addr,
    /// The mask length in bits.
    pub length: u8,
}

/// An IPv6 network: address and mask length, with no bits set outside the
/// mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Prefix {
    /// The network address.
    pub address: Ipv6Addr,
    /// The mask length in bits.
    pub length: u8,
}

/// `staggered start parallel N delay S`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaggeredStart {
    /// VMs started per batch, at least 1.
    pub parallel: u32,
    /// Seconds between batches.
    pub delay_seconds: u32,
}

/// A user or group named in an `owner` option, resolved through the system's
/// user database when the configuration was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The numeric uid or gid.
    pub id: u32,
    /// The name as written, or `None` when the id was written as a number.
    pub name: Option<String>,
}

/// An owner: `user`, `user:group`, `:group` or a numeric uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The owning user; `None` for `:group`, which leaves the uid at root.
    pub user: Option<Principal>,
    /// The owning group; `None` when only a user was given.
    pub group: Option<Principal>,
}

impl Owner {
    /// Returns the uid: the user's, or 0 when only a group was given.
    pub fn uid(&self) -> u32 {
        self.user.as_ref().map_or(0, |user| user.id)
    }

    /// Returns the gid, or `None` when no group was given.
    pub fn gid(&self) -> Option<u32> {
        self.group.as_ref().map(|group| group.id)
    }
}

/// A `switch NAME { ... }` block: a Linux bridge that VM interfaces join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    /// The switch name that VM interfaces refer to.
    pub name: String,
    /// The `switch` line.
    pub location: Location,
    /// `enable` (default) or `disable`; vmd skips disabled switches.
    pub enabled: bool,
    /// `interface`: the bridge interface name on the host.
    pub interface: String,
    /// `group`: interface group added to each member interface.
    pub group: Option<String>,
    /// `locked lladdr`: member interfaces only let through frames from
    /// their configured MAC address.
    pub locked_lladdr: bool,
    /// `rdomain`: routing domain (0..=255) that member interfaces inherit
    /// unless they set their own.
    pub rdomain: Option<u8>,
    /// `up` (default) or `down`.
    pub up: bool,
}

/// One-shot boot device of `boot device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootDevice {
    /// `boot device cdrom`.
    Cdrom,
    /// `boot device disk`.
    Disk,
    /// `boot device net`.
    Net,
}

/// Disk image format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    /// A raw image.
    Raw,
    /// A qcow2 image.
    Qcow2,
}

/// A `disk PATH [format F]` option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// The image, resolved with realpath when the configuration was loaded.
    pub path: PathBuf,
    /// The format given with `format`. `None` means the opener detects it:
    /// qcow2 when the image starts with the qcow2 magic `QFI\xfb`, else raw.
    pub format: Option<DiskFormat>,
    /// The `disk` line.
    pub location: Location,
}

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddress(pub [u8; 6]);

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A `[local] interface [NAME] [options]` option of a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The `interface` line.
    pub location: Location,
    /// `local`: vmd assigns addresses from the local prefix and answers
    /// DHCP on this interface.
    pub local: bool,
    /// The host tap interface name; `None` (also for `tap`) lets vmd choose.
    pub name: Option<String>,
    /// `switch`: the switch to join. A name with no switch block leaves the
    /// interface unattached, with a warning at load time.
    pub switch: Option<String>,
    /// `group`: interface group.
    pub group: Option<String>,
    /// `locked`: only frames from `lladdr` pass.
    pub locked: bool,
    /// `lladdr`: the guest MAC address; `None` means a random one.
    pub lladdr: Option<MacAddress>,
    /// `rdomain`: routing domain 0..=255.
    pub rdomain: Option<u8>,
    /// `up` (default) or `down`.
    pub up: bool,
}

/// The `allow instance` permissions of a VM: what users creating instances
/// of it may change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowInstance {
    /// `boot`: a kernel.
    pub boot: bool,
    /// `memory`: the memory size.
    pub memory: bool,
    /// `interface`: the interfaces.
    pub interface: bool,
    /// `disk`: the disks.
    pub disk: bool,
    /// `cdrom`: the CD-ROM image.
    pub cdrom: bool,
    /// `instance`: create instances of the instance.
    pub instance: bool,
    /// `owner`: who may create instances; `None` means root only.
    pub owner: Option<Owner>,
}

/// A `vm NAME { ... }` or `vm PARENT instance NAME { ... }` block.
///
/// Options that were not written are `None`; an instance inherits them from
/// its parent when vmd registers it, so they are kept unresolved here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    /// The VM name: up to 63 letters, digits, `.`, `-` and `_`, starting with
    /// a letter or digit.
    pub name: String,
    /// The `vm` line.
    pub location: Location,
    /// For `vm PARENT instance NAME`, the parent VM.
    pub instance_of: Option<String>,
    /// `enable` (default) or `disable`: disabled VMs are not started with vmd.
    pub enabled: bool,
    /// `boot PATH`: kernel or firmware image, resolved with realpath.
    pub boot: Option<PathBuf>,
    /// `boot device`: one-shot boot device.
    pub boot_device: Option<BootDevice>,
    /// `cdrom PATH`: ISO image, kept as written and opened when the VM starts.
    pub cdrom: Option<PathBuf>,
    /// `disk` options, in order.
    pub disks: Vec<Disk>,
    /// `interface` options, in order.
    pub interfaces: Vec<Interface>,
    /// `interfaces N`: the minimum number of interfaces.
    pub interface_count: Option<u8>,
    /// `memory`: guest memory in bytes, rounded down to a MiB.
    pub memory_bytes: Option<u64>,
    /// `cpus N` (Linux extension): vCPU count.
    pub cpus: Option<u8>,
    /// `initrd PATH` (Linux extension): initial ramdisk, resolved with
    /// realpath.
    pub initrd: Option<PathBuf>,
    /// `cmdline STRING` (Linux extension): kernel command line.
    pub cmdline: Option<String>,
    /// `owner`: who may start, stop and attach to the VM; `None` is root.
    pub owner: Option<Owner>,
    /// `allow instance`.
    pub allow_instance: Option<AllowInstance>,
}

impl Vm {
    /// Returns the guest memory in bytes: `memory`, else
    /// [`DEFAULT_MEMORY_BYTES`].
    pub fn effective_memory_bytes(&self) -> u64 {
        self.memory_bytes.unwrap_or(DEFAULT_MEMORY_BYTES)
    }

    /// Returns the vCPU count: `cpus`, else [`DEFAULT_CPUS`].
    pub fn effective_cpus(&self) -> u8 {
        self.cpus.unwrap_or(DEFAULT_CPUS)
    }

    /// Returns the number of interfaces the guest sees: the larger of
    /// `interfaces N` and the number of `interface` options.
    pub fn effective_interface_count(&self) -> usize {
        let minimum = self.interface_count.map_or(0, usize::from);
        minimum.max(self.interfaces.len())
    }
}

//! The parent's list of VMs: configuration, state and who waits for what.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::time::Instant;

use proto::VmTarget;

use super::console::Console;

/// Where a VM is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Not running.
    Stopped,
    /// The vm process is being started.
    Starting,
    /// The guest runs.
    Running,
    /// Asked to stop, still running.
    Stopping,
}

/// What a client waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitKind {
    /// The answer to `vmctl start`.
    Start,
    /// The end of a VM stopped with `-w`.
    Terminate,
    /// The end of a VM stopped with `-f`.
    ForceTerminate,
}

/// Where a VM's definition came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Created by `vmctl start` with options.
    Vmctl,
    /// Defined in vm.conf.
    Config,
}

/// A file a VM boots from: handed over open by vmctl, or named in vm.conf
/// and opened by the parent at each start.
pub enum FileSource {
    /// Opened by vmctl with the user's permissions.
    Open(File),
    /// A path from vm.conf.
    Path(PathBuf),
}

/// Who owns a VM: may start, stop and attach to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group whose members share the VM, if any.
    pub gid: Option<u32>,
}

/// A VM as configured.
pub struct VmDefinition {
    /// Where the definition came from.
    pub origin: Origin,
    /// Guest memory in bytes.
    pub memory_bytes: u64,
    /// vCPUs.
    pub vcpus: u8,
    /// Kernel.
    pub kernel: Option<FileSource>,
    /// Initrd.
    pub initrd: Option<FileSource>,
    /// Kernel command line.
    pub cmdline: String,
    /// Owner.
    pub owner: Owner,
    /// Started when vmd starts.
    pub enabled: bool,
    /// Disks, in guest order.
    pub disks: Vec<DiskDefinition>,
    /// Set when the VM has a configured boot that vmd cannot do yet.
    pub unsupported: Option<String>,
}

/// A disk of a VM, opened with its backing chain at each start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskDefinition {
    /// Absolute path of the top image.
    pub path: PathBuf,
    /// The configured format; None probes the image's magic.
    pub format: Option<proto::DiskFormat>,
}

/// One VM.
pub struct VmEntry {
    /// vmd id.
    pub id: u32,
    /// Name.
    pub name: String,
    /// The configuration.
    pub definition: VmDefinition,
    /// The user who started it (the owner shown while it runs).
    pub uid: u32,
    /// A kernel given with `vmctl start -b` for this start only.
    pub kernel_override: Option<File>,
    /// State.
    pub lifecycle: Lifecycle,
    /// The vm process while running.
    pub pid: Option<u32>,
    /// The console while running (kept across reboots).
    pub console: Option<Console>,
    /// Clients waiting for this VM.
    pub waiters: Vec<(u32, WaitKind)>,
    /// When the VM last started, for the restart rate limit.
    pub last_start: Option<Instant>,
    /// Starts in a row that came less than the rate limit apart.
    pub quick_starts: u32,
}

impl VmEntry {
    /// Creates a stopped VM.
    pub fn new(id: u32, name: String, definition: VmDefinition) -> VmEntry {
        VmEntry {
            id,
            name,
            uid: definition.owner.uid,
            definition,
            kernel_override: None,
            lifecycle: Lifecycle::Stopped,
            pid: None,
            console: None,
            waiters: Vec::new(),
            last_start: None,
            quick_starts: 0,
        }
    }
}

/// All VMs by id, plus the sticky name-to-id assignment.
#[derive(Default)]
pub struct Registry {
    vms: BTreeMap<u32, VmEntry>,
    ids: BTreeMap<(String, u32), u32>,
    next_id: u32,
}

impl Registry {
    /// Finds a VM by id or name.
    pub fn find(&self, target: &VmTarget) -> Option<u32> {
        match target {
            VmTarget::Id(id) => self.vms.contains_key(id).then_some(*id),
            VmTarget::Name(name) => self.find_name(name),
        }
    }

    /// Finds a VM by name.
    pub fn find_name(&self, name: &str) -> Option<u32> {
        self.vms.values().find(|vm| vm.name == name).map(|vm| vm.id)
    }

    /// Returns the id for (`name`, `uid`): the same pair keeps its id
    /// across restarts, as OpenBSD's vm_claimid does.
    pub fn claim_id(&mut self, name: &str, uid: u32) -> u32 {
        if let Some(&id) = self.ids.get(&(name.to_string(), uid)) {
            return id;
        }
        self.next_id += 1;
        self.ids.insert((name.to_string(), uid), self.next_id);
        self.next_id
    }

    /// Adds or replaces a VM.
    pub fn insert(&mut self, vm: VmEntry) {
        self.vms.insert(vm.id, vm);
    }

    /// Removes a VM.
    pub fn remove(&mut self, id: u32) -> Option<VmEntry> {
        self.vms.remove(&id)
    }

    /// A VM by id, to change.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut VmEntry> {
        self.vms.get_mut(&id)
    }

    /// Every VM in id order.
    pub fn iter(&self) -> impl Iterator<Item = &VmEntry> {
        self.vms.values()
    }

    /// Every VM in id order, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut VmEntry> {
        self.vms.values_mut()
    }
}

//! The message types, one enum per direction.
//!
//! Descriptors that travel with a message are listed in its variant's
//! documentation, in the order they are attached.

use serde::{Deserialize, Serialize};

use crate::ErrorCode;
use crate::channel::Message;

/// A VM named in a request: by its vmd id or by its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmTarget {
    /// The vmd id shown by `vmctl status`.
    Id(u32),
    /// The VM's name.
    Name(String),
}

impl VmTarget {
    /// Returns whether this names the VM with `id` and `name`.
    pub fn matches(&self, id: u32, name: &str) -> bool {
        match self {
            VmTarget::Id(target) => *target == id,
            VmTarget::Name(target) => target == name,
        }
    }
}

impl std::fmt::Display for VmTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmTarget::Id(id) => write!(f, "{id}"),
            VmTarget::Name(name) => f.write_str(name),
        }
    }
}

/// Image format of a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskFormat {
    /// A plain file of disk bytes.
    Raw,
    /// QEMU copy-on-write, version 2 or 3.
    Qcow2,
}

/// A disk named in a start request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRequest {
    /// Absolute path of the top image.
    pub path: String,
    /// The format, when the user gave it; otherwise the image's magic
    /// decides.
    pub format: Option<DiskFormat>,
}

/// A `vmctl start` request. Unset fields take the VM's configured values
/// or the defaults (512M, 1 vCPU).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    /// The VM's name.
    pub name: String,
    /// Guest memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Number of vCPUs.
    pub vcpus: Option<u8>,
    /// Path of the kernel, for messages; vmctl opened it and attaches it.
    pub kernel: Option<String>,
    /// Path of the initrd, for messages; vmctl opened it and attaches it.
    pub initrd: Option<String>,
    /// Kernel command line.
    pub cmdline: Option<String>,
    /// Disks, opened by vmd.
    pub disks: Vec<DiskRequest>,
}

impl StartRequest {
    /// Returns whether the request sets anything beyond a kernel: such a request
    /// defines a new VM (OpenBSD's vmc_flags), so it needs something to
    /// boot and cannot restart a VM defined elsewhere.
    pub fn has_options(&self) -> bool {
        self.memory_bytes.is_some()
            || self.vcpus.is_some()
            || self.initrd.is_some()
            || self.cmdline.is_some()
            || !self.disks.is_empty()
    }
}

/// A `vmctl stop` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    /// The VM to stop.
    pub target: VmTarget,
    /// Kill the VM at once instead of asking the guest to shut down.
    pub force: bool,
    /// Reply only when the VM has stopped.
    pub wait: bool,
}

/// Requests from vmctl to vmd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Start a VM. Descriptors: the kernel if `kernel` is set, then the
    /// initrd if `initrd` is set.
    Start(StartRequest),
    /// Stop a VM.
    Stop(StopRequest),
    /// List every VM. The reply is one [`ControlResponse::Status`] per VM
    /// and a final [`ControlResponse::StatusEnd`].
    Status,
}

impl Message for ControlRequest {
    // OpenBSD's imsg numbers for the same requests.
    fn kind(&self) -> u32 {
        match self {
            ControlRequest::Start(_) => 8,
            ControlRequest::Stop(_) => 19,
            ControlRequest::Status => 22,
        }
    }
}

/// A failure, with a code vmctl turns into words and vmd's detail text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The reason as a code.
    pub code: ErrorCode,
    /// Description of the failure in vmd's words, possibly empty.
    pub detail: String,
}

impl ErrorReply {
    /// Creates a reply with `code` and `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> ErrorReply {
        ErrorReply {
            code,
            detail: detail.into(),
        }
    }
}

/// The state column of `vmctl status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Running.
    Running,
    /// Asked to shut down, still running.
    Stopping,
    /// Not running.
    Stopped,
    /// Paused.
    Paused,
    /// Waiting for its turn in a staggered start.
    Waiting,
    /// Configured but disabled.
    Disabled,
}

/// One row of `vmctl status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStatus {
    /// vmd id.
    pub id: u32,
    /// The vm process, while running.
    pub pid: Option<u32>,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest memory size in bytes.
    pub memory_bytes: u64,
    /// Host memory the VM uses now, in bytes, while running.
    pub used_bytes: Option<u64>,
    /// The console pty (`/dev/pts/N`), while running.
    pub tty: Option<String>,
    /// User name (or uid) of the owner: the starter while running, the
    /// configured owner otherwise.
    pub owner_user: String,
    /// Group name (or gid) of the owner, if a group is set.
    pub owner_group: Option<String>,
    /// State.
    pub state: VmState,
    /// Name.
    pub name: String,
}

/// Replies from vmd to vmctl.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// The VM is running.
    Started {
        /// vmd id.
        id: u32,
        /// The vm process.
        pid: u32,
        /// Console pty path.
        tty: String,
    },
    /// The guest was asked to shut down.
    StopRequested {
        /// vmd id.
        id: u32,
    },
    /// The VM has stopped (the reply to a waiting stop).
    Terminated {
        /// vmd id.
        id: u32,
    },
    /// The VM was killed (answer to a forced stop).
    ForceTerminated {
        /// vmd id.
        id: u32,
    },
    /// One VM of a status listing.
    Status(VmStatus),
    /// End of a status listing.
    StatusEnd,
    /// The request failed.
    Error(ErrorReply),
}

impl Message for ControlResponse {
    fn kind(&self) -> u32 {
        match self {
            ControlResponse::Started { .. } => 13,
            ControlResponse::StopRequested { .. } => 20,
            ControlResponse::Terminated { .. } | ControlResponse::ForceTerminated { .. } => 21,
            ControlResponse::Status(_) => 23,
            ControlResponse::StatusEnd => 24,
            ControlResponse::Error(_) => 2,
        }
    }
}

/// The credentials of a control socket client, from SO_PEERCRED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Process id.
    pub pid: u32,
}

/// From the control process to the parent; the header's peer id is the
/// client connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlToParent {
    /// A client's request, with the client's descriptors.
    Request {
        /// The sender's credentials.
        credentials: Credentials,
        /// The request.
        request: ControlRequest,
    },
    /// The client disconnected.
    Closed,
}

impl Message for ControlToParent {
    fn kind(&self) -> u32 {
        match self {
            ControlToParent::Request { request, .. } => request.kind(),
            ControlToParent::Closed => 5,
        }
    }
}

/// From the parent to the control process; the header's peer id is the
/// client connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentToControl {
    /// Pass this reply to the client.
    Reply(ControlResponse),
}

impl Message for ParentToControl {
    fn kind(&self) -> u32 {
        match self {
            ParentToControl::Reply(response) => response.kind(),
        }
    }
}

/// The fixed description of a VM that the vmm and vm processes need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// vmd id.
    pub id: u32,
    /// Name.
    pub name: String,
    /// Guest memory in bytes.
    pub memory_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Kernel command line.
    pub cmdline: String,
    /// Whether an initrd descriptor is attached.
    pub has_initrd: bool,
    /// Disks, in guest order.
    pub disks: Vec<DiskSpec>,
}

/// One disk handed to a vm process: its chain of open files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// The chain, top image first; one descriptor is attached per file.
    pub files: Vec<ChainFileSpec>,
    /// The guest may only read.
    pub read_only: bool,
}

/// One file of a disk chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainFileSpec {
    /// Path the parent opened, for messages.
    pub path: String,
    /// Its format.
    pub format: DiskFormat,
}

/// Descriptor order of [`ParentToVmm::StartVm`] and [`VmmToVm::Start`]:
/// /dev/kvm, the console pty master, the kernel, the initrd if any, then
/// the files of each disk in [`VmSpec::disks`] order, top image first.
pub mod start_fds {
    /// Index of the /dev/kvm descriptor.
    pub const KVM: usize = 0;
    /// Index of the console pty master.
    pub const CONSOLE: usize = 1;
    /// Index of the kernel.
    pub const KERNEL: usize = 2;
    /// Index of the initrd, when there is one.
    pub const INITRD: usize = 3;
}

/// From the parent to the vmm process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentToVmm {
    /// Start a vm process for this VM; descriptors as in [`start_fds`].
    StartVm(VmSpec),
    /// Stop the VM with this id.
    StopVm {
        /// vmd id.
        id: u32,
        /// Kill at once instead of asking the guest.
        force: bool,
    },
}

impl Message for ParentToVmm {
    fn kind(&self) -> u32 {
        match self {
            ParentToVmm::StartVm(_) => 8,
            ParentToVmm::StopVm { .. } => 19,
        }
    }
}

/// The way a vm process ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmExitReason {
    /// The guest powered off.
    PowerOff,
    /// The guest rebooted; vmd starts it again.
    Reboot,
    /// The VM was stopped on request.
    Stopped,
    /// The vm process was killed (forced stop).
    Killed,
    /// The vm process failed.
    Failed(String),
}

/// From the vmm process to the parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmmToParent {
    /// The VM runs in process `pid`.
    VmStarted {
        /// vmd id.
        id: u32,
        /// The vm process.
        pid: u32,
    },
    /// The VM could not be started.
    VmStartFailed {
        /// vmd id.
        id: u32,
        /// Why.
        error: ErrorReply,
    },
    /// The vm process ended.
    VmExited {
        /// vmd id.
        id: u32,
        /// How.
        reason: VmExitReason,
    },
}

impl Message for VmmToParent {
    fn kind(&self) -> u32 {
        match self {
            VmmToParent::VmStarted { .. } => 13,
            VmmToParent::VmStartFailed { .. } => 13,
            VmmToParent::VmExited { .. } => 21,
        }
    }
}

/// From the vmm process to one vm process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmmToVm {
    /// Build and run this VM; descriptors as in [`start_fds`].
    Start(VmSpec),
    /// Ask the guest to shut down (ACPI power button).
    Shutdown,
}

impl Message for VmmToVm {
    fn kind(&self) -> u32 {
        match self {
            VmmToVm::Start(_) => 8,
            VmmToVm::Shutdown => 40,
        }
    }
}

/// From a vm process to the vmm process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmToVmm {
    /// The guest is running.
    Running,
    /// The VM could not be built.
    StartFailed(ErrorReply),
    /// The VM is about to exit, and why.
    Exiting(VmExitReason),
}

impl Message for VmToVmm {
    fn kind(&self) -> u32 {
        match self {
            VmToVmm::Running => 13,
            VmToVmm::StartFailed(_) => 13,
            VmToVmm::Exiting(_) => 21,
        }
    }
}

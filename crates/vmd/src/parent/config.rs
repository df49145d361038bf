//! Turning vm.conf into VM definitions and starting the enabled VMs in
//! batches (OpenBSD's staggered start).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::registry::{DiskDefinition, FileSource, Origin, Owner, VmDefinition};

/// Kernel command line of a configured VM without `cmdline`.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// Builds the definition of every VM in `config`, instances completed
/// with what they inherit from their parent.
pub fn definitions(config: &vmconf::Config) -> Vec<(String, VmDefinition)> {
    config
        .vms
        .iter()
        .map(|vm| {
            let parent = vm.instance_of.as_deref().and_then(|name| config.vm(name));
            (vm.name.clone(), definition(vm, parent))
        })
        .collect()
}

fn definition(vm: &vmconf::Vm, parent: Option<&vmconf::Vm>) -> VmDefinition {
    // An instance takes its parent's values for what it does not set
    // (disks and interfaces are never inherited).
    let boot = vm
        .boot
        .clone()
        .or_else(|| parent.and_then(|p| p.boot.clone()));
    let initrd = vm
        .initrd
        .clone()
        .or_else(|| parent.and_then(|p| p.initrd.clone()));
    let cmdline = vm
        .cmdline
        .clone()
        .or_else(|| parent.and_then(|p| p.cmdline.clone()))
        .unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
    let memory_bytes = vm
        .memory_bytes
        .or_else(|| parent.and_then(|p| p.memory_bytes))
        .unwrap_or(vmconf::DEFAULT_MEMORY_BYTES);
    let vcpus = vm
        .cpus
        .or_else(|| parent.and_then(|p| p.cpus))
        .unwrap_or(vmconf::DEFAULT_CPUS);
    let owner = vm
        .owner
        .as_ref()
        .or_else(|| parent.and_then(|p| p.owner.as_ref()));

    VmDefinition {
        origin: Origin::Config,
        memory_bytes,
        vcpus,
        unsupported: unsupported_reason(vm, boot.is_some()),
        kernel: boot.map(FileSource::Path),
        initrd: initrd.map(FileSource::Path),
        cmdline,
        owner: Owner {
            uid: owner.map_or(0, |o| o.uid()),
            gid: owner.and_then(|o| o.gid()),
        },
        enabled: vm.enabled,
        disks: vm
            .disks
            .iter()
            .map(|disk| DiskDefinition {
                path: disk.path.clone(),
                format: disk.format.map(|format| match format {
                    vmconf::DiskFormat::Raw => proto::DiskFormat::Raw,
                    vmconf::DiskFormat::Qcow2 => proto::DiskFormat::Qcow2,
                }),
            })
            .collect(),
    }
}

// A configured VM that needs something vmd cannot do yet is kept in the
// list but refuses to start, with this reason.
fn unsupported_reason(vm: &vmconf::Vm, has_kernel: bool) -> Option<String> {
    if !has_kernel {
        // TODO: boot from disk or cdrom through SeaBIOS.
        return Some("booting without a kernel (firmware boot) is not supported yet".into());
    }
    if !vm.interfaces.is_empty() || vm.effective_interface_count() > 0 {
        return Some("network interfaces are not supported yet".into());
    }
    if vm.cdrom.is_some() {
        return Some("cdrom images are not supported yet".into());
    }
    None
}

/// The queue of VMs waiting for their turn to start.
pub struct StaggeredStart {
    queue: VecDeque<u32>,
    parallel: usize,
    delay: Duration,
    next_batch: Option<Instant>,
}

impl StaggeredStart {
    /// Creates the queue with the configured parallelism and delay, or
    /// OpenBSD's defaults: as many VMs as online CPUs, then 30 s.
    pub fn new(config: &vmconf::Config) -> StaggeredStart {
        let (parallel, delay_seconds) = match &config.globals.staggered_start {
            Some(setting) => (setting.value.parallel as usize, setting.value.delay_seconds),
            None => (
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                vmconf::DEFAULT_STAGGERED_DELAY_SECONDS,
            ),
        };
        StaggeredStart {
            queue: VecDeque::new(),
            parallel: parallel.max(1),
            delay: Duration::from_secs(u64::from(delay_seconds)),
            next_batch: None,
        }
    }

    /// Queues VM `id`; the first batch is due at once.
    pub fn push(&mut self, id: u32) {
        self.queue.push_back(id);
        self.next_batch.get_or_insert_with(Instant::now);
    }

    /// When the next batch is due, if any VM waits.
    pub fn next_batch(&self) -> Option<Instant> {
        self.next_batch
    }

    /// Takes the batch due at `now`, if any, and schedules the next one.
    pub fn take_due(&mut self, now: Instant) -> Vec<u32> {
        if self.next_batch.is_none_or(|due| now < due) {
            return Vec::new();
        }
        let count = self.parallel.min(self.queue.len());
        let batch: Vec<u32> = self.queue.drain(..count).collect();
        self.next_batch = (!self.queue.is_empty()).then(|| now + self.delay);
        batch
    }

    /// Returns whether VM `id` waits in the queue.
    pub fn contains(&self, id: u32) -> bool {
        self.queue.contains(&id)
    }

    /// Removes VM `id` from the queue (started or stopped by hand).
    pub fn remove(&mut self, id: u32) {
        self.queue.retain(|&queued| queued != id);
        if self.queue.is_empty() {
            self.next_batch = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(parallel: usize, delay_seconds: u64) -> StaggeredStart {
        StaggeredStart {
            queue: VecDeque::new(),
            parallel,
            delay: Duration::from_secs(delay_seconds),
            next_batch: None,
        }
    }

    #[test]
    fn batches_follow_parallelism_and_delay() {
        let mut start = queue(2, 30);
        for id in 1..=5 {
            start.push(id);
        }
        let now = Instant::now();
        assert_eq!(start.take_due(now), vec![1, 2]);
        assert_eq!(
            start.take_due(now + Duration::from_secs(29)),
            Vec::<u32>::new()
        );
        assert_eq!(start.take_due(now + Duration::from_secs(30)), vec![3, 4]);
        assert_eq!(start.take_due(now + Duration::from_secs(60)), vec![5]);
        assert_eq!(start.next_batch(), None);
    }

    #[test]
    fn removed_vm_is_not_started() {
        let mut start = queue(1, 0);
        start.push(1);
        start.push(2);
        start.remove(1);
        assert_eq!(start.take_due(Instant::now()), vec![2]);
    }
}

//! Guest RAM: one memfd per VM, mapped into this process and registered
//! with KVM.
//!
//! A memfd rather than anonymous memory, so that a device process or a
//! snapshot writer can later map the same pages from the file descriptor.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use nix::sys::memfd::{MFdFlags, memfd_create};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::layout::{RamRange, ram_ranges};

/// The guest memory type used by every device of the engine.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Errors while creating or registering guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// memfd_create or ftruncate failed.
    #[error("cannot create guest memory file of {size_bytes} bytes")]
    CreateMemfd {
        /// Requested size.
        size_bytes: u64,
        /// The system error.
        #[source]
        source: nix::Error,
    },
    /// Mapping the memfd failed.
    #[error("cannot map guest memory")]
    Map(#[source] vm_memory::mmap::FromRangesError),
    /// KVM_SET_USER_MEMORY_REGION failed.
    #[error("cannot register guest memory slot {slot} with KVM")]
    Register {
        /// Memory slot number.
        slot: u32,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Guest RAM, mapped from a memfd, and its layout.
pub struct GuestRam {
    memory: Arc<GuestMemoryMmap>,
    ranges: Vec<RamRange>,
}

// Asks for transparent huge pages on guest RAM, as QEMU does for its RAM
// blocks. Each 2 MiB page spares the host (or an outer hypervisor) 511
// guest page faults and makes TLB misses rarer. On a memfd the kernel
// honours the request only when
// /sys/kernel/mm/transparent_hugepage/shmem_enabled is "advise",
// "within_size" or "always". With "never", its usual default, the request
// has no effect.
fn advise_huge_pages(address: *mut u8, len_bytes: usize) {
    // SAFETY: MADV_HUGEPAGE changes only how the kernel backs the range,
    // never its contents, and the range is a mapping that the guest
    // memory being built owns.
    let result = unsafe { libc::madvise(address.cast(), len_bytes, libc::MADV_HUGEPAGE) };
    if result != 0 {
        log::debug!(
            "guest memory: madvise(MADV_HUGEPAGE) failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl GuestRam {
    /// Creates `memory_bytes` of zeroed guest RAM laid out around the PCI
    /// hole (see [`crate::layout::ram_ranges`]).
    pub fn new(memory_bytes: u64) -> Result<GuestRam, MemoryError> {
        let memfd: OwnedFd =
            memfd_create(c"guest-ram", MFdFlags::MFD_CLOEXEC).map_err(|source| {
                MemoryError::CreateMemfd {
                    size_bytes: memory_bytes,
                    source,
                }
            })?;
        let size = i64::try_from(memory_bytes).map_err(|_| MemoryError::CreateMemfd {
            size_bytes: memory_bytes,
            source: nix::Error::EINVAL,
        })?;
        nix::unistd::ftruncate(memfd.as_fd(), size).map_err(|source| MemoryError::CreateMemfd {
            size_bytes: memory_bytes,
            source,
        })?;
        let memfd = Arc::new(File::from(memfd));

        let ranges = ram_ranges(memory_bytes);
        let mut file_offset = 0u64;
        let mut regions = Vec::with_capacity(ranges.len());
        for range in &ranges {
            regions.push((
                GuestAddress(range.start),
                range.len_bytes as usize,
                Some(FileOffset::from_arc(memfd.clone(), file_offset)),
            ));
            file_offset += range.len_bytes;
        }
        let memory = GuestMemoryMmap::from_ranges_with_files(regions).map_err(MemoryError::Map)?;
        for region in memory.iter() {
            advise_huge_pages(region.as_ptr(), region.len() as usize);
        }

        Ok(GuestRam {
            memory: Arc::new(memory),
            ranges,
        })
    }

    /// Registers every RAM range with KVM as a memory slot.
    pub fn register(&self, vm: &VmFd) -> Result<(), MemoryError> {
        for (slot, region) in self.memory.iter().enumerate() {
            let slot = slot as u32;
            let region_desc = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the mapping behind `userspace_addr` belongs to
            // `self.memory`, which lives as long as the VM, because the VM
            // keeps an Arc to it and closes the KVM VM fd before the mapping.
            unsafe { vm.set_user_memory_region(region_desc) }
                .map_err(|source| MemoryError::Register { slot, source })?;
        }
        Ok(())
    }

    /// Returns the mapped guest memory, shared with device threads.
    pub fn memory(&self) -> &Arc<GuestMemoryMmap> {
        &self.memory
    }

    /// Returns the RAM ranges, in guest physical address order.
    pub fn ranges(&self) -> &[RamRange] {
        &self.ranges
    }

    /// Returns the end of RAM below the PCI hole (exclusive).
    pub fn low_ram_end(&self) -> u64 {
        self.ranges[0].start + self.ranges[0].len_bytes
    }
}

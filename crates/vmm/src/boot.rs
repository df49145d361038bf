//! Loading a Linux kernel, initrd and command line for the 64-bit boot
//! entry, and building the zero page (`struct boot_params`) with the e820
//! memory map (Documentation/arch/x86/boot.rst).
//!
//! Accepted kernels: a bzImage (entry 0x200 past its protected-mode part)
//! or an ELF vmlinux (entry at `e_entry`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{KernelLoader, bzimage::BzImage, elf::Elf};
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{
    ACPI_START, BIOS_AREA_END, CMDLINE_MAX_BYTES, CMDLINE_START, EBDA_START, HIGH_MEMORY_START,
    ZERO_PAGE_START,
};
use crate::memory::{GuestMemoryMmap, GuestRam};

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
const LOADFLAGS_LOADED_HIGH: u8 = 0x01;
const LOADFLAGS_CAN_USE_HEAP: u8 = 0x80;
const XLF_KERNEL_64: u16 = 1 << 0;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
/// Offset of the 64-bit entry point from the start of a bzImage's
/// protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const PAGE_SIZE: u64 = 4096;

/// Errors loading the kernel, initrd or command line.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Reading the kernel or initrd file failed.
    #[error("cannot read the {what}")]
    Read {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel is neither a bzImage nor an ELF file.
    #[error("kernel is not a bzImage or ELF vmlinux")]
    UnknownKernelFormat,
    /// The bzImage has no 64-bit entry point.
    #[error("kernel has no 64-bit entry point (XLF_KERNEL_64 is not set)")]
    No64BitEntry,
    /// linux-loader rejected the kernel. Its message already names the
    /// inner cause, so the cause is not also chained as a source.
    #[error("cannot load the kernel: {0}")]
    LoadKernel(linux_loader::loader::Error),
    /// The kernel and its working space do not fit in guest memory.
    #[error(
        "memory size {memory_mib}M is too small for the kernel, which needs at least {needed_mib}M"
    )]
    MemoryTooSmallForKernel {
        /// Memory below the PCI hole, in MiB.
        memory_mib: u64,
        /// Memory the kernel needs, in MiB.
        needed_mib: u64,
    },
    /// The initrd does not fit between the kernel and the end of low memory.
    #[error(
        "memory size {memory_mib}M is too small for the kernel and a {initrd_bytes}-byte initrd"
    )]
    MemoryTooSmallForInitrd {
        /// Memory below the PCI hole, in MiB.
        memory_mib: u64,
        /// Size of the initrd.
        initrd_bytes: u64,
    },
    /// The command line is longer than the kernel accepts.
    #[error("kernel command line is {len} bytes; the kernel accepts at most {max}")]
    CmdlineTooLong {
        /// Length of the command line.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The command line contains a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    /// Writing boot data into guest memory failed.
    #[error("cannot write boot data into guest memory")]
    WriteGuestMemory(#[source] vm_memory::GuestMemoryError),
}

/// The entry point the boot vCPU starts the kernel at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootEntry {
    /// Guest physical address of the 64-bit entry point.
    pub entry: u64,
}

/// The kernel, initrd and command line to boot.
pub struct BootSource<'a> {
    /// A bzImage or ELF vmlinux.
    pub kernel: &'a mut File,
    /// An initramfs, if any.
    pub initrd: Option<&'a mut File>,
    /// The kernel command line.
    pub cmdline: &'a str,
}

enum KernelFormat {
    BzImage,
    Elf,
}

fn kernel_format(kernel: &mut File) -> Result<KernelFormat, BootError> {
    let read = |what| move |source| BootError::Read { what, source };
    let mut magic = [0u8; 4];
    kernel.seek(SeekFrom::Start(0)).map_err(read("kernel"))?;
    if kernel.read_exact(&mut magic).is_ok() && magic == ELF_MAGIC {
        return Ok(KernelFormat::Elf);
    }
    // "HdrS" at 0x202 marks the boot protocol header of a bzImage.
    let mut header = [0u8; 4];
    kernel
        .seek(SeekFrom::Start(0x202))
        .map_err(read("kernel"))?;
    if kernel.read_exact(&mut header).is_ok() && u32::from_le_bytes(header) == KERNEL_HDR_MAGIC {
        return Ok(KernelFormat::BzImage);
    }
    Err(BootError::UnknownKernelFormat)
}

/// Loads `source` into `ram` and writes the zero page. `rsdp` is the
/// address of the ACPI RSDP, passed to the kernel in the zero page.
pub fn load_linux(ram: &GuestRam, source: BootSource, rsdp: u64) -> Result<BootEntry, BootError> {
    let memory = ram.memory().as_ref();
    let low_ram_end = ram.low_ram_end();

    let (entry, kernel_end, mut header) = match kernel_format(source.kernel)? {
        KernelFormat::BzImage => load_bzimage(memory, source.kernel, low_ram_end)?,
        KernelFormat::Elf => load_elf(memory, source.kernel, low_ram_end)?,
    };

    let cmdline_max = match header.cmdline_size {
        0 => CMDLINE_MAX_BYTES - 1,
        size => (size as usize).min(CMDLINE_MAX_BYTES - 1),
    };
    write_cmdline(memory, source.cmdline, cmdline_max)?;
    header.cmd_line_ptr = CMDLINE_START as u32;
    header.cmdline_size = source.cmdline.len() as u32;

    if let Some(initrd) = source.initrd {
        let (address, size) = load_initrd(memory, initrd, &header, kernel_end, low_ram_end)?;
        header.ramdisk_image = address as u32;
        header.ramdisk_size = size as u32;
    }

    let mut params = boot_params {
        hdr: header,
        acpi_rsdp_addr: rsdp,
        ..Default::default()
    };
    let e820 = e820_map(ram);
    params.e820_entries = e820.len() as u8;
    params.e820_table[..e820.len()].copy_from_slice(&e820);
    memory
        .write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(BootError::WriteGuestMemory)?;

    Ok(BootEntry { entry })
}

// Loads a bzImage's protected-mode code at 1 MiB and returns the entry,
// the end of the loaded code and the setup header to complete.
fn load_bzimage(
    memory: &GuestMemoryMmap,
    kernel: &mut File,
    low_ram_end: u64,
) -> Result<(u64, u64, setup_header), BootError> {
    let result = BzImage::load(
        memory,
        Some(GuestAddress(HIGH_MEMORY_START)),
        kernel,
        Some(GuestAddress(HIGH_MEMORY_START)),
    );
    let result = match result {
        Ok(result) => result,
        Err(e) => {
            let needed = kernel_file_len(kernel)? + HIGH_MEMORY_START;
            if needed > low_ram_end {
                return Err(memory_too_small(low_ram_end, needed));
            }
            return Err(BootError::LoadKernel(e));
        }
    };
    let mut header = result
        .setup_header
        .expect("the bzImage loader always returns the setup header");
    if header.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BootError::No64BitEntry);
    }
    // The kernel decompresses itself in place and needs init_size bytes
    // from its load address.
    let needed = HIGH_MEMORY_START + u64::from(header.init_size);
    if needed > low_ram_end {
        return Err(memory_too_small(low_ram_end, needed));
    }
    header.type_of_loader = KERNEL_LOADER_OTHER;
    header.loadflags |= LOADFLAGS_LOADED_HIGH | LOADFLAGS_CAN_USE_HEAP;
    // The heap ends where the zero page is, below the boot stack.
    header.heap_end_ptr = (ZERO_PAGE_START - 0x200) as u16;
    let entry = result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET;
    Ok((entry, result.kernel_end.max(needed), header))
}

fn load_elf(
    memory: &GuestMemoryMmap,
    kernel: &mut File,
    low_ram_end: u64,
) -> Result<(u64, u64, setup_header), BootError> {
    if let Some(end) = elf_load_end(kernel)?
        && end > low_ram_end
    {
        return Err(memory_too_small(low_ram_end, end));
    }
    let result = Elf::load(memory, None, kernel, Some(GuestAddress(HIGH_MEMORY_START)))
        .map_err(BootError::LoadKernel)?;
    if result.kernel_end > low_ram_end {
        return Err(memory_too_small(low_ram_end, result.kernel_end));
    }
    let header = setup_header {
        boot_flag: KERNEL_BOOT_FLAG_MAGIC,
        header: KERNEL_HDR_MAGIC,
        // Boot protocol 2.10: cmdline_size and the fields above it are valid.
        version: 0x020a,
        type_of_loader: KERNEL_LOADER_OTHER,
        loadflags: LOADFLAGS_LOADED_HIGH,
        kernel_alignment: KERNEL_MIN_ALIGNMENT_BYTES,
        initrd_addr_max: 0x7fff_ffff,
        ..Default::default()
    };
    Ok((result.kernel_load.0, result.kernel_end, header))
}

// Returns the end of the highest PT_LOAD segment of an ELF64 file, or
// None when the headers cannot be read (the loader then reports why).
fn elf_load_end(kernel: &mut File) -> Result<Option<u64>, BootError> {
    const PT_LOAD: u32 = 1;
    const PHDR_BYTES: usize = 56;
    let read = |source| BootError::Read {
        what: "kernel",
        source,
    };
    let mut header = [0u8; 64];
    kernel.seek(SeekFrom::Start(0)).map_err(read)?;
    if kernel.read_exact(&mut header).is_err() {
        return Ok(None);
    }
    let phoff = u64::from_le_bytes(header[32..40].try_into().expect("8 bytes"));
    let phentsize = u16::from_le_bytes([header[54], header[55]]) as usize;
    let phnum = u16::from_le_bytes([header[56], header[57]]);
    if phentsize != PHDR_BYTES {
        return Ok(None);
    }
    let mut end = 0u64;
    let mut phdr = [0u8; PHDR_BYTES];
    for index in 0..u64::from(phnum) {
        kernel
            .seek(SeekFrom::Start(
                phoff.saturating_add(index * PHDR_BYTES as u64),
            ))
            .map_err(read)?;
        if kernel.read_exact(&mut phdr).is_err() {
            return Ok(None);
        }
        let field = |at: usize| u64::from_le_bytes(phdr[at..at + 8].try_into().expect("8 bytes"));
        if u32::from_le_bytes(phdr[0..4].try_into().expect("4 bytes")) == PT_LOAD {
            // p_paddr at 24, p_memsz at 40.
            end = end.max(field(24).saturating_add(field(40)));
        }
    }
    Ok(Some(end))
}

fn kernel_file_len(kernel: &File) -> Result<u64, BootError> {
    kernel
        .metadata()
        .map(|m| m.len())
        .map_err(|source| BootError::Read {
            what: "kernel",
            source,
        })
}

fn memory_too_small(low_ram_end: u64, needed: u64) -> BootError {
    BootError::MemoryTooSmallForKernel {
        memory_mib: low_ram_end >> 20,
        needed_mib: needed.div_ceil(1 << 20),
    }
}

fn write_cmdline(memory: &GuestMemoryMmap, cmdline: &str, max: usize) -> Result<(), BootError> {
    if cmdline.len() > max {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    if cmdline.contains('\0') {
        return Err(BootError::CmdlineNul);
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    memory
        .write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(BootError::WriteGuestMemory)
}

// Places the initrd page-aligned as high as the kernel allows, above the
// kernel; returns its address and size.
fn load_initrd(
    memory: &GuestMemoryMmap,
    initrd: &mut File,
    header: &setup_header,
    kernel_end: u64,
    low_ram_end: u64,
) -> Result<(u64, u64), BootError> {
    let read = |source| BootError::Read {
        what: "initrd",
        source,
    };
    let size = initrd.metadata().map_err(read)?.len();
    let too_small = BootError::MemoryTooSmallForInitrd {
        memory_mib: low_ram_end >> 20,
        initrd_bytes: size,
    };
    let limit = match header.initrd_addr_max {
        0 => 0x3800_0000,
        max => u64::from(max) + 1,
    }
    .min(low_ram_end);
    let Some(address) = limit.checked_sub(size) else {
        return Err(too_small);
    };
    let address = address & !(PAGE_SIZE - 1);
    if address < kernel_end.next_multiple_of(PAGE_SIZE) {
        return Err(too_small);
    }
    initrd.seek(SeekFrom::Start(0)).map_err(read)?;
    memory
        .read_exact_volatile_from(GuestAddress(address), initrd, size as usize)
        .map_err(BootError::WriteGuestMemory)?;
    Ok((address, size))
}

/// Builds the e820 map: low RAM up to the EBDA, the BIOS area (with the
/// ACPI tables) reserved, RAM from 1 MiB to the PCI hole, RAM above 4 GiB.
pub fn e820_map(ram: &GuestRam) -> Vec<boot_e820_entry> {
    let entry = |addr: u64, size: u64, r#type| boot_e820_entry { addr, size, r#type };
    let mut map = vec![
        entry(0, EBDA_START, E820_RAM),
        entry(EBDA_START, 0xa_0000 - EBDA_START, E820_RESERVED),
        entry(ACPI_START, BIOS_AREA_END - ACPI_START, E820_RESERVED),
    ];
    for range in ram.ranges() {
        let start = range.start.max(HIGH_MEMORY_START);
        let end = range.start + range.len_bytes;
        if end > start {
            map.push(entry(start, end - start, E820_RAM));
        }
    }
    map
}

//! boot-bench: boot time and memory overhead of vmd side by side with QEMU.
//!
//! The VMMs are vmd driven by `vmctl start -c`, QEMU `-M microvm` and QEMU
//! `-M pc`. The guests are a tiny ELF that writes one byte to COM1 as its
//! first instructions, and a Linux kernel with the test initramfs. For each
//! pair, a monotonic clock times the span from launching the start command
//! to a marker on the console. At the marker the program reads the VM
//! process's /proc/PID/smaps: its resident size, and that minus its guest
//! RAM mapping. VMMs take turns within each round, starting with a different
//! one each round, so that load on a shared machine spreads over all of
//! them. Each sample is printed as a tab-separated line, then a Markdown
//! table of medians, ranges and vmd/QEMU ratios.

mod report;
mod sample;
mod smaps;
mod stats;
mod vmms;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::report::Sample;
use crate::sample::{Plan, measure};
use crate::smaps::Mapping;
use crate::vmms::{BootFiles, Launcher, MachineSize, Vmd, VmmKind};

/// The first-byte guest, assembled by build.rs from guest/first_byte.S.
const FIRST_BYTE_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/first_byte.elf"));
/// The byte the first-byte guest writes.
const FIRST_BYTE_MARKER: &[u8] = b"!";
/// The line the test initramfs prints once its modules are loaded.
const LINUX_MARKER: &[u8] = b"VMDTEST-BOOTED";
/// How many of the largest mappings `--show-mappings` prints.
const SHOWN_MAPPINGS: usize = 12;

/// A guest to boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GuestKind {
    /// The embedded ELF whose first instructions write '!' to COM1.
    FirstByte,
    /// The Linux kernel and initramfs, timed to VMDTEST-BOOTED.
    Linux,
}

impl GuestKind {
    /// Returns the name shown in tables.
    pub fn label(self) -> &'static str {
        match self {
            GuestKind::FirstByte => "first byte",
            GuestKind::Linux => "Linux",
        }
    }

    fn marker(self) -> &'static [u8] {
        match self {
            GuestKind::FirstByte => FIRST_BYTE_MARKER,
            GuestKind::Linux => LINUX_MARKER,
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "boot-bench",
    about = "Time VM start to a console marker and read the VM process's memory, for vmd and QEMU"
)]
struct Options {
    /// Measured runs per VMM and guest.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Runs per VMM and guest done first and left out of the figures.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// VMMs to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "vmd,qemu-microvm,qemu-pc"
    )]
    vmm: Vec<VmmKind>,
    /// Guests to boot, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "first-byte,linux")]
    guest: Vec<GuestKind>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    memory_mib: u64,
    /// vCPUs of each VM.
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// The Linux guest's kernel.
    #[arg(long, env = "GUEST_KERNEL")]
    kernel: Option<PathBuf>,
    /// The Linux guest's initramfs.
    #[arg(long, env = "GUEST_INITRD")]
    initrd: Option<PathBuf>,
    /// The Linux guest's command line, to which "vmdtest.then=wait" is
    /// appended.
    #[arg(
        long,
        env = "GUEST_CMDLINE",
        default_value = "console=ttyS0 quiet panic=-1"
    )]
    cmdline: String,
    /// The directory holding vmd and vmctl (default: this program's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The QEMU program.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// QEMU's -cpu value.
    #[arg(long, default_value = "host")]
    qemu_cpu: String,
    /// Seconds to wait for each marker.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Print the largest resident mappings of each VMM's first measured
    /// run, to see what the memory overhead is made of.
    #[arg(long)]
    show_mappings: bool,
}

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boot-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A directory removed when dropped.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(options: &Options) -> Result<(), String> {
    if options.vmm.is_empty() || options.guest.is_empty() || options.runs == 0 {
        return Err("nothing to measure: --vmm, --guest and --runs must not be empty".to_string());
    }
    let work_dir = WorkDir(std::env::temp_dir().join(format!("boot-bench.{}", std::process::id())));
    std::fs::create_dir_all(&work_dir.0).map_err(|e| format!("{}: {e}", work_dir.0.display()))?;
    let boots = boot_files(options, &work_dir.0)?;
    let size = MachineSize {
        memory_mib: options.memory_mib,
        cpus: options.cpus,
    };

    let vmd = if options.vmm.contains(&VmmKind::Vmd) {
        Some(Vmd::start(&bin_dir(options)?, &work_dir.0)?)
    } else {
        None
    };
    let launcher = |kind: VmmKind| match kind {
        VmmKind::Vmd => Launcher::Vmd(vmd.as_ref().expect("vmd runs when it is measured")),
        VmmKind::QemuMicrovm | VmmKind::QemuPc => Launcher::Qemu {
            binary: &options.qemu,
            machine: if kind == VmmKind::QemuPc {
                "pc"
            } else {
                "microvm"
            },
            cpu: &options.qemu_cpu,
        },
    };

    print_environment(options);
    println!("sample\tround\tvmm\tguest\tboot_ms\trss_kib\tguest_ram_kib\toverhead_kib");
    let mut samples = Vec::new();
    let rounds = options.warmup + options.runs;
    for round in 0..rounds {
        let measured = round >= options.warmup;
        for (guest, boot) in options.guest.iter().zip(&boots) {
            let vm_name = format!("bench-{}-{round}", guest.label().replace(' ', "-"));
            let plan = Plan {
                vm_name: &vm_name,
                boot,
                size,
                marker: guest.marker(),
                timeout: Duration::from_secs(options.timeout),
                work_dir: &work_dir.0,
            };
            // Start each round with the next VMM.
            for turn in 0..options.vmm.len() {
                let vmm = options.vmm[(round + turn) % options.vmm.len()];
                let show = options.show_mappings && round == options.warmup;
                let mut mappings = Vec::new();
                let measurement = measure(&launcher(vmm), &plan, show.then_some(&mut mappings))
                    .map_err(|e| {
                        let log = vmd.as_ref().map(Vmd::log_text).unwrap_or_default();
                        format!("{} {}: {e}\nvmd log:\n{log}", vmm.label(), guest.label())
                    })?;
                let memory = measurement.memory;
                println!(
                    "sample\t{}\t{vmm:?}\t{guest:?}\t{:.1}\t{}\t{}\t{}",
                    if measured {
                        round - options.warmup + 1
                    } else {
                        0
                    },
                    measurement.boot.as_secs_f64() * 1000.0,
                    memory.total_kib,
                    memory.guest_kib,
                    memory.overhead_kib()
                );
                if show {
                    print_mappings(vmm, *guest, &mappings);
                }
                if measured {
                    samples.push(Sample {
                        vmm,
                        guest: *guest,
                        measurement,
                    });
                }
            }
        }
    }

    println!();
    println!(
        "{} runs per cell after {} warm-up run(s); {} MiB and {} vCPU(s) per VM. \
         Each cell: median (min–max).",
        options.runs, options.warmup, options.memory_mib, options.cpus
    );
    println!();
    print!("{}", report::table(&samples, &options.vmm, &options.guest));
    if let Some(vmd) = &vmd {
        let rss_kib = vmd.daemon_rss_kib()?;
        println!();
        println!(
            "vmd's own processes (parent, control, vmm) with no VM running: RSS {:.1} MiB in all",
            rss_kib as f64 / 1024.0
        );
    }
    Ok(())
}

// The boot files of each guest in options.guest, in the same order.
fn boot_files(options: &Options, work_dir: &Path) -> Result<Vec<BootFiles>, String> {
    let mut boots = Vec::new();
    for guest in &options.guest {
        let boot = match guest {
            GuestKind::FirstByte => {
                let kernel = work_dir.join("first_byte.elf");
                std::fs::write(&kernel, FIRST_BYTE_GUEST)
                    .map_err(|e| format!("{}: {e}", kernel.display()))?;
                BootFiles {
                    kernel,
                    initrd: None,
                    cmdline: None,
                }
            }
            GuestKind::Linux => {
                let missing = "the Linux guest needs --kernel and --initrd (or GUEST_KERNEL and GUEST_INITRD)";
                BootFiles {
                    kernel: options.kernel.clone().ok_or(missing)?,
                    initrd: Some(options.initrd.clone().ok_or(missing)?),
                    // The guest waits for the power button after the marker,
                    // so the VM is still up when its memory is read.
                    cmdline: Some(format!("{} vmdtest.then=wait", options.cmdline)),
                }
            }
        };
        boots.push(boot);
    }
    Ok(boots)
}

fn bin_dir(options: &Options) -> Result<PathBuf, String> {
    if let Some(dir) = &options.bin_dir {
        return Ok(dir.clone());
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    Ok(exe
        .parent()
        .expect("an executable's path has a directory")
        .to_path_buf())
}

// The machine, as lines starting with "#".
fn print_environment(options: &Options) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kvm = ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .filter(|module| Path::new("/sys/module").join(module).exists())
        .collect::<Vec<_>>()
        .join(",");
    let qemu = if options.vmm.iter().any(|v| *v != VmmKind::Vmd) {
        qemu_version(&options.qemu)
    } else {
        "not used".to_string()
    };

    println!("# cpu: {}", cpu_description());
    println!("# kernel: {}", kernel.trim());
    println!(
        "# kvm module: {}",
        if kvm.is_empty() { "none" } else { &kvm }
    );
    println!("# qemu: {qemu}, -cpu {}", options.qemu_cpu);
    println!(
        "# transparent huge pages: enabled={}, shmem_enabled={}",
        huge_page_setting("enabled"),
        huge_page_setting("shmem_enabled")
    );
}

// The CPU model and the number of CPUs online, from /proc/cpuinfo.
fn cpu_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let cpus = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    format!("{model}, {cpus} online")
}

// The first line of `qemu --version`.
fn qemu_version(qemu: &Path) -> String {
    std::process::Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".to_string())
}

// The selected value of a transparent huge page setting, which the kernel
// shows in brackets: "always [madvise] never".
fn huge_page_setting(name: &str) -> String {
    let path = format!("/sys/kernel/mm/transparent_hugepage/{name}");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            let (_, rest) = text.split_once('[')?;
            let (value, _) = rest.split_once(']')?;
            Some(value.to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

// The largest resident mappings, on stderr.
fn print_mappings(vmm: VmmKind, guest: GuestKind, mappings: &[Mapping]) {
    let mut largest: Vec<&Mapping> = mappings.iter().collect();
    largest.sort_by_key(|m| std::cmp::Reverse(m.rss_kib));
    eprintln!(
        "largest resident mappings of {} ({}):",
        vmm.label(),
        guest.label()
    );
    for mapping in largest.iter().take(SHOWN_MAPPINGS) {
        eprintln!("{:>8} kB  {}", mapping.rss_kib, mapping.header);
    }
}

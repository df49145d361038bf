//! Building and running one VM: guest memory, interrupt controllers,
//! devices, ACPI tables, the kernel, and the vCPU threads.

use std::fs::File;
use std::sync::{Arc, Mutex};

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::acpi::{self, AcpiError};
use crate::boot::{self, BootError, BootSource};
use crate::bus::{AddressSpace, Bus, BusDevice, BusError, lock_device};
use crate::cpu::{self, CpuError};
use crate::devices::Sink;
use crate::devices::acpi_pm::{AcpiPm, PM_PORT_BASE, PM_PORT_COUNT, SCI_IRQ, SciLine};
use crate::devices::cmos::{CMOS_PORT_BASE, CMOS_PORT_COUNT, Cmos, NvramMemory};
use crate::devices::i8042::{I8042, I8042_PORT_BASE, I8042_PORT_COUNT};
use crate::devices::serial::{
    COM1_IRQ, COM1_PORT_BASE, COM1_PORT_COUNT, ConsoleOutput, SerialDevice, spawn_input_thread,
};
use crate::exit::{ExitSignal, VmExit};
use crate::irq::{IrqError, IrqRouting};
use crate::layout::{KVM_IDENTITY_MAP_START, KVM_TSS_START, PCI_MMIO_SIZE, PCI_MMIO_START};
use crate::memory::{GuestRam, MemoryError};
use crate::pci::{
    PCI_CONFIG_PORT_BASE, PCI_CONFIG_PORT_COUNT, PciBus, PciConfigIo, PciDevice, PciMmioWindow,
};
use crate::vcpu::{self, VcpuContext};
use crate::virtio::VirtioDevice;
use crate::virtio::block::Block;
use crate::virtio::pci::{BAR_SIZE, TransportPlacement, VirtioPciDevice};
use crate::virtio::rng::Rng;

/// The largest number of vCPUs a VM may have.
pub const MAX_VCPUS: u8 = 64;
/// The smallest guest memory accepted.
pub const MIN_MEMORY_BYTES: u64 = 1 << 20;
/// The largest guest memory accepted (128 GiB, OpenBSD's limit).
pub const MAX_MEMORY_BYTES: u64 = 128 << 30;
const POST_PORT: u64 = 0x80;

/// The guest's console: where output goes and where input comes from.
pub struct ConsoleConfig {
    /// Destination of everything the guest writes to COM1.
    pub output: ConsoleOutput,
    /// Source of input for COM1, normally the same pty master as output.
    pub input: Option<File>,
}

/// A disk attached to a VM as a virtio-blk device.
pub struct DiskConfig {
    /// The open disk (its whole backing chain).
    pub disk: std::sync::Arc<disk::Disk>,
    /// Serial number the guest reads with GET_ID (up to 20 bytes).
    pub serial: String,
}

/// The largest number of disks a VM may have (OpenBSD's limit).
pub const MAX_DISKS: usize = 4;

/// Everything needed to build a VM.
pub struct VmConfig {
    /// Name used in logs.
    pub name: String,
    /// Guest memory in bytes.
    pub memory_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Kernel image (bzImage or ELF vmlinux).
    pub kernel: File,
    /// Initial ramdisk.
    pub initrd: Option<File>,
    /// Kernel command line.
    pub cmdline: String,
    /// Console connection.
    pub console: ConsoleConfig,
    /// Disks, in the order the guest sees them (vda, vdb, ...).
    pub disks: Vec<DiskConfig>,
}

/// Errors building a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The vCPU count is outside 1..=MAX_VCPUS or above what KVM allows.
    #[error("{requested} vCPUs requested; the limit is {limit}")]
    VcpuCount {
        /// Requested vCPUs.
        requested: u8,
        /// The limit.
        limit: u8,
    },
    /// More disks than a VM may have.
    #[error("{requested} disks requested; the limit is {MAX_DISKS}")]
    DiskCount {
        /// Requested disks.
        requested: usize,
    },
    /// The memory size is outside the accepted range.
    #[error("memory size {requested_bytes} bytes is outside 1M..128G")]
    MemorySize {
        /// Requested bytes.
        requested_bytes: u64,
    },
    /// A KVM ioctl on the VM failed.
    #[error("{what} failed")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Interrupt routing could not be set up.
    #[error(transparent)]
    Irq(#[from] IrqError),
    /// Two devices overlap.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Creating an eventfd or thread failed.
    #[error("cannot create {what}")]
    Resource {
        /// The resource being created.
        what: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// ACPI tables could not be written.
    #[error(transparent)]
    Acpi(#[from] AcpiError),
    /// The kernel, initrd or command line could not be loaded.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// A vCPU could not be configured.
    #[error(transparent)]
    Cpu(#[from] CpuError),
}

fn kvm_error(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

fn resource_error(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |source| VmError::Resource { what, source }
}

struct KvmSciLine(Arc<VmFd>);

impl SciLine for KvmSciLine {
    fn set_level(&self, asserted: bool) {
        if let Err(e) = self.0.set_irq_line(SCI_IRQ, asserted) {
            log::warn!("pm: cannot set the SCI line: {e}");
        }
    }
}

/// Lets other threads ask a running VM to shut down or stop.
#[derive(Clone)]
pub struct VmController {
    pm: Arc<Mutex<AcpiPm>>,
    exit: Arc<ExitSignal>,
}

impl VmController {
    /// Presses the ACPI power button, asking the guest to shut down.
    /// Returns false when the guest has not enabled power button events,
    /// i.e. no ACPI-aware OS is running to act on the press.
    pub fn press_power_button(&self) -> bool {
        let mut pm = lock_device(&self.pm);
        pm.press_power_button();
        pm.power_button_enabled()
    }

    /// Stops the VM at once, as if its power was cut.
    pub fn stop(&self) {
        self.exit.trigger(VmExit::Stopped);
    }
}

/// A VM ready to run.
pub struct Vm {
    name: String,
    // Field order is drop order: the devices and vCPUs go before the VM
    // file descriptor, and the VM before the guest memory it maps.
    pci_devices: Vec<Arc<Mutex<VirtioPciDevice>>>,
    vcpus: Vec<VcpuFd>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    serial: Arc<Mutex<SerialDevice>>,
    console_input: Option<File>,
    controller: VmController,
    _vm: Arc<VmFd>,
    _ram: GuestRam,
}

impl Vm {
    /// Builds a VM from `config` on the KVM system handle `kvm`.
    pub fn new(kvm: &Kvm, mut config: VmConfig) -> Result<Vm, VmError> {
        let kvm_limit = kvm.get_max_vcpus().min(usize::from(MAX_VCPUS)) as u8;
        if config.vcpus == 0 || config.vcpus > kvm_limit {
            return Err(VmError::VcpuCount {
                requested: config.vcpus,
                limit: kvm_limit,
            });
        }
        if config.disks.len() > MAX_DISKS {
            return Err(VmError::DiskCount {
                requested: config.disks.len(),
            });
        }
        if !(MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&config.memory_bytes) {
            return Err(VmError::MemorySize {
                requested_bytes: config.memory_bytes,
            });
        }

        let vm = Arc::new(kvm.create_vm().map_err(kvm_error("KVM_CREATE_VM"))?);
        vm.set_tss_address(KVM_TSS_START as usize)
            .map_err(kvm_error("KVM_SET_TSS_ADDR"))?;
        vm.set_identity_map_address(KVM_IDENTITY_MAP_START)
            .map_err(kvm_error("KVM_SET_IDENTITY_MAP_ADDR"))?;
        vm.create_irq_chip()
            .map_err(kvm_error("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_error("KVM_CREATE_PIT2"))?;

        let ram = GuestRam::new(config.memory_bytes)?;
        ram.register(&vm)?;
        let routing = Arc::new(IrqRouting::new(vm.clone())?);
        let exit = Arc::new(ExitSignal::new());

        let devices = build_devices(&vm, &ram, &routing, &exit, &mut config)?;
        let rsdp = acpi::write_tables(ram.memory(), config.vcpus)?;
        cpu::write_boot_tables(ram.memory())?;
        let source = BootSource {
            kernel: &mut config.kernel,
            initrd: config.initrd.as_mut(),
            cmdline: &config.cmdline,
        };
        let boot = boot::load_linux(&ram, source, rsdp)?;
        let vcpus = create_vcpus(kvm, &vm, config.vcpus, boot.entry)?;

        Ok(Vm {
            name: config.name,
            pci_devices: devices.pci,
            vcpus,
            pio: Arc::new(devices.pio),
            mmio: Arc::new(devices.mmio),
            serial: devices.serial,
            console_input: config.console.input,
            controller: VmController {
                pm: devices.pm,
                exit,
            },
            _vm: vm,
            _ram: ram,
        })
    }

    /// Returns a handle for other threads to shut down or stop this VM.
    pub fn controller(&self) -> VmController {
        self.controller.clone()
    }

    /// Runs the VM until the guest powers off or resets, a vCPU fails, or
    /// [`VmController::stop`] is called.
    pub fn run(mut self) -> Result<VmExit, VmError> {
        vcpu::install_kick_handler().map_err(resource_error("the vCPU kick signal handler"))?;
        let input_stop = EventFd::new(libc::EFD_NONBLOCK).map_err(resource_error("an eventfd"))?;
        let input_thread = match self.console_input.take() {
            Some(input) => {
                let stop = input_stop
                    .try_clone()
                    .map_err(resource_error("an eventfd"))?;
                Some(
                    spawn_input_thread(self.serial.clone(), input, stop)
                        .map_err(resource_error("the console input thread"))?,
                )
            }
            None => None,
        };

        let context = VcpuContext {
            pio: self.pio.clone(),
            mmio: self.mmio.clone(),
            exit: self.controller.exit.clone(),
        };
        let mut threads = Vec::new();
        let mut spawn_error = None;
        for (index, vcpu) in self.vcpus.drain(..).enumerate() {
            match vcpu::spawn(index as u8, vcpu, context.clone()) {
                Ok(thread) => threads.push(thread),
                Err(source) => {
                    // The threads already started return once an exit is
                    // recorded, and the cleanup below runs as for any exit.
                    self.controller.exit.trigger(VmExit::Fatal(format!(
                        "vcpu{index}: cannot start the thread: {source}"
                    )));
                    spawn_error = Some(source);
                    break;
                }
            }
        }
        if spawn_error.is_none() {
            log::debug!("vm {}: running", self.name);
        }

        let exit = self.controller.exit.wait();
        vcpu::stop_all(threads);
        let _ = input_stop.write(1);
        if let Some(thread) = input_thread {
            let _ = thread.join();
        }
        for device in &self.pci_devices {
            lock_device(device).stop();
        }
        match spawn_error {
            Some(source) => Err(resource_error("a vCPU thread")(source)),
            None => Ok(exit),
        }
    }
}

struct Devices {
    pio: Bus,
    mmio: Bus,
    serial: Arc<Mutex<SerialDevice>>,
    pm: Arc<Mutex<AcpiPm>>,
    pci: Vec<Arc<Mutex<VirtioPciDevice>>>,
}

fn build_devices(
    vm: &Arc<VmFd>,
    ram: &GuestRam,
    routing: &Arc<IrqRouting>,
    exit: &Arc<ExitSignal>,
    config: &mut VmConfig,
) -> Result<Devices, VmError> {
    let mut pio = Bus::new(AddressSpace::Pio);
    let mut mmio = Bus::new(AddressSpace::Mmio);
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(resource_error("an eventfd"))?;
    vm.register_irqfd(&serial_irq, COM1_IRQ)
        .map_err(kvm_error("KVM_IRQFD for COM1"))?;
    let output = std::mem::replace(&mut config.console.output, ConsoleOutput::Discard);
    let serial = Arc::new(Mutex::new(SerialDevice::new(serial_irq, output)));
    pio.insert(
        serial.clone(),
        u64::from(COM1_PORT_BASE),
        u64::from(COM1_PORT_COUNT),
    )?;

    let i8042: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(I8042::new(exit.clone())));
    pio.insert(
        i8042,
        u64::from(I8042_PORT_BASE),
        u64::from(I8042_PORT_COUNT),
    )?;

    let low_bytes = ram.low_ram_end();
    let cmos = Cmos::new(NvramMemory {
        low_bytes,
        high_bytes: config.memory_bytes - low_bytes,
        vcpus: config.vcpus,
    });
    pio.insert(
        Arc::new(Mutex::new(cmos)),
        u64::from(CMOS_PORT_BASE),
        u64::from(CMOS_PORT_COUNT),
    )?;

    let pm = Arc::new(Mutex::new(AcpiPm::new(
        Box::new(KvmSciLine(vm.clone())),
        exit.clone(),
    )));
    pio.insert(
        pm.clone(),
        u64::from(PM_PORT_BASE),
        u64::from(PM_PORT_COUNT),
    )?;
    pio.insert(Arc::new(Mutex::new(Sink)), POST_PORT, 1)?;

    let mut pci_bus = PciBus::new();
    let mut pci_devices = Vec::new();
    // Puts `device` behind the virtio PCI transport on the bus. BAR 0 of
    // the n-th device is the n-th BAR-sized block of the PCI MMIO window.
    let mut add_virtio_device =
        |device: Box<dyn VirtioDevice>, name: String| -> Result<(), VmError> {
            let bar_address = PCI_MMIO_START + u64::from(BAR_SIZE) * pci_devices.len() as u64;
            let device = VirtioPciDevice::new(
                device,
                TransportPlacement {
                    bar_address: bar_address as u32,
                    name,
                },
                vm.clone(),
                routing.clone(),
                ram.memory().clone(),
            )?;
            let device = Arc::new(Mutex::new(device));
            pci_devices.push(device.clone());
            pci_bus
                .add(device as Arc<Mutex<dyn PciDevice>>)
                .expect("the rng and MAX_DISKS disks fit the bus");
            Ok(())
        };

    add_virtio_device(Box::<Rng>::default(), "viornd".to_string())?;
    for (index, disk) in config.disks.drain(..).enumerate() {
        let name = format!("vioblk{index}");
        let block = Block::new(name.clone(), disk.disk, &disk.serial);
        add_virtio_device(Box::new(block), name)?;
    }
    debug_assert!(u64::from(BAR_SIZE) * pci_devices.len() as u64 <= PCI_MMIO_SIZE);

    pio.insert(
        Arc::new(Mutex::new(PciConfigIo::new(pci_bus.clone(), exit.clone()))),
        u64::from(PCI_CONFIG_PORT_BASE),
        u64::from(PCI_CONFIG_PORT_COUNT),
    )?;
    mmio.insert(
        Arc::new(Mutex::new(PciMmioWindow::new(pci_bus, PCI_MMIO_START))),
        PCI_MMIO_START,
        PCI_MMIO_SIZE,
    )?;

    Ok(Devices {
        pio,
        mmio,
        serial,
        pm,
        pci: pci_devices,
    })
}

fn create_vcpus(kvm: &Kvm, vm: &VmFd, count: u8, entry: u64) -> Result<Vec<VcpuFd>, VmError> {
    let supported = cpu::supported_cpuid(kvm)?;
    let mut vcpus = Vec::with_capacity(usize::from(count));
    for index in 0..count {
        let vcpu = vm
            .create_vcpu(u64::from(index))
            .map_err(kvm_error("KVM_CREATE_VCPU"))?;
        let cpuid = cpu::cpuid_for_vcpu(&supported, index, count);
        vcpu.set_cpuid2(&cpuid).map_err(|source| CpuError::Ioctl {
            vcpu: index,
            what: "KVM_SET_CPUID2",
            source,
        })?;
        cpu::setup_msrs(&vcpu, index)?;
        if index == 0 {
            cpu::setup_boot_registers(&vcpu, entry)?;
            cpu::setup_lapic(&vcpu, index)?;
        }
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

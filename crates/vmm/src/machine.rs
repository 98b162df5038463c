//! A machine under construction: KVM, guest memory, the VM with its interrupt controllers, and
//! the two buses. The builder (for Linux) and the tiny-guest tests both start from here, add
//! devices, then call [`Machine::start`] to create the vCPUs and get a running [`Vmm`].

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use bus::{Bus, BusError, SharedDevice};
use devices::legacy::{SerialConsole, I8042};
use kvm_ioctls::{Cap, IoEventAddress, Kvm};
use virtio::MmioTransport;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::regs::EntryMode;
use crate::host::HostProfile;
use crate::vmm::{Console, EventHandler, Vmm, VmmError};
use crate::vstate::memory::GuestMemory;
use crate::vstate::memory::{create_guest_memory, MemoryError};
use crate::vstate::vcpu::{install_kick_handler, Vcpu, VcpuError, VcpuShared};
use crate::vstate::vcpu_state::{StateCaps, VcpuState, VcpuStateError};
use crate::vstate::vm::{open_kvm, Vm, VmError};

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("cannot place a device on the {bus} bus")]
    Bus {
        bus: &'static str,
        #[source]
        source: BusError,
    },
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    #[error(transparent)]
    Vmm(#[from] VmmError),
    #[error(transparent)]
    VcpuState(#[from] VcpuStateError),
    #[error("the snapshot has {saved} vCPUs, the machine {machine}")]
    VcpuCount { saved: usize, machine: u8 },
    #[error("cannot register an ioeventfd at {addr:#x}")]
    Ioevent {
        addr: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// See [`Machine::reset_trigger`].
pub struct ResetTrigger {
    evt: EventFd,
    stop: Arc<AtomicBool>,
}

impl devices::Interrupt for ResetTrigger {
    fn raise(&self) -> std::io::Result<()> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.evt.write(1)
    }
}

/// Where the vCPUs start: at the kernel's entry (a boot) or from saved state (a restore).
pub enum VcpuStart {
    Boot { entry: EntryMode, aps: ApStart },
    Restore(Vec<VcpuState>),
}

/// How application processors start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApStart {
    /// Wait for INIT/SIPI from the guest's boot processor, as on real hardware (Linux).
    WaitForSipi,
    /// Start at the same entry state as the boot processor (tiny test guests).
    SameEntry,
}

pub struct Machine {
    pub kvm: Kvm,
    pub vm: Vm,
    pub memory: GuestMemory,
    pub host: HostProfile,
    pub vcpus: u8,
    /// Sample every vCPU's guest RIP at this interval (the guest profiler); `None` = off.
    pub profile_interval: Option<std::time::Duration>,
    pio: Bus,
    mmio: Bus,
    reset_evt: EventFd,
    /// Set when the VM must stop; vCPUs check it before every `KVM_RUN`.
    stop: Arc<AtomicBool>,
    /// Device fds for the event loop (see [`Machine::add_event_handler`]).
    handlers: Vec<Box<dyn EventHandler>>,
    /// The devices whose state a snapshot saves (filled by the builder).
    pub devices: DeviceHandles,
    /// What the machine was built from (a snapshot records it to rebuild the devices).
    pub config: Option<crate::config::VmConfig>,
    /// KVM logs the pages the guest writes (see [`Machine::enable_dirty_log`]).
    dirty_log: bool,
}

/// One virtio-mmio device: its window on the MMIO bus, interrupt line and transport.
#[derive(Clone)]
pub struct VirtioSlot {
    pub base: u64,
    pub gsi: u32,
    pub transport: Arc<Mutex<MmioTransport>>,
}

/// The guest's ACPI setup as it lives on: its snapshot state and the Generic Event Device's
/// interrupt, raised to tell the guest its VM generation ID changed.
#[derive(Clone)]
pub struct AcpiHandle {
    pub state: crate::arch::acpi::AcpiState,
    pub ged: Arc<EventFd>,
}

/// The devices with state beyond their configuration, as the VMM reaches them at run time.
#[derive(Clone, Default)]
pub struct DeviceHandles {
    pub serial: Option<Arc<Mutex<SerialConsole>>>,
    /// The keyboard controller (Ctrl+Alt+Del from the API).
    pub i8042: Option<Arc<Mutex<I8042>>>,
    /// In attach order (= MMIO address order).
    pub virtio: Vec<VirtioSlot>,
    /// The devices' counters (see `crate::metrics`).
    pub metrics: crate::metrics::DeviceMetrics,
    /// The balloon's control handle (target, statistics), if the VM has one.
    pub balloon: Option<devices::virtio::BalloonHandle>,
    /// ACPI tables and the VM generation ID (guests booted before hearth had them have none).
    pub acpi: Option<AcpiHandle>,
    /// The drives by id (`PATCH /drives` after boot).
    pub blocks: Vec<(String, Arc<Mutex<devices::virtio::Block>>)>,
}

impl Machine {
    /// Opens /dev/kvm and creates a VM with `mem_size` bytes of RAM for `vcpus` vCPUs.
    pub fn new(vcpus: u8, mem_size: u64) -> Result<Self, MachineError> {
        Self::with_memory(vcpus, create_guest_memory(mem_size)?)
    }

    /// A machine over existing guest memory (e.g. mapped from a snapshot's memory file).
    pub fn with_memory(vcpus: u8, memory: GuestMemory) -> Result<Self, MachineError> {
        let kvm = open_kvm()?;
        let vm = Vm::new(&kvm, &memory)?;
        let reset_evt = EventFd::new(EFD_NONBLOCK).map_err(MachineError::EventFd)?;
        Ok(Self {
            kvm,
            vm,
            memory,
            host: HostProfile::detect(),
            vcpus,
            profile_interval: None,
            pio: Bus::new(),
            mmio: Bus::new(),
            reset_evt,
            stop: Arc::new(AtomicBool::new(false)),
            handlers: Vec::new(),
            devices: DeviceHandles::default(),
            config: None,
            dirty_log: false,
        })
    }

    /// Has KVM log the pages the guest writes, for diff snapshots.
    pub fn enable_dirty_log(&mut self) -> Result<(), MachineError> {
        self.vm.enable_dirty_log(&self.memory)?;
        self.dirty_log = true;
        Ok(())
    }

    /// Largest vCPU count KVM accepts on this host.
    pub fn max_vcpus(kvm: &Kvm) -> u32 {
        let max = kvm.check_extension_int(Cap::MaxVcpus);
        let max = if max > 0 {
            max
        } else {
            kvm.check_extension_int(Cap::NrVcpus)
        };
        u32::try_from(max).unwrap_or(1).max(1)
    }

    pub fn insert_pio(&mut self, dev: SharedDevice, base: u64, len: u64) -> Result<(), MachineError> {
        self.pio.insert(dev, base, len).map_err(|source| MachineError::Bus {
            bus: "port I/O",
            source,
        })
    }

    pub fn insert_mmio(&mut self, dev: SharedDevice, base: u64, len: u64) -> Result<(), MachineError> {
        self.mmio
            .insert(dev, base, len)
            .map_err(|source| MachineError::Bus { bus: "MMIO", source })
    }

    /// An eventfd wired as an irqfd to interrupt line `gsi`.
    pub fn irq_evt(&self, gsi: u32) -> Result<EventFd, MachineError> {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(MachineError::EventFd)?;
        self.vm.register_irqfd(&evt, gsi)?;
        Ok(evt)
    }

    /// Makes a 4-byte guest write of `datamatch` to MMIO address `addr` signal `evt` inside KVM,
    /// without a vCPU exit (virtio queue notifications).
    pub fn register_ioevent(&self, evt: &EventFd, addr: u64, datamatch: u32) -> Result<(), MachineError> {
        self.vm
            .fd()
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), datamatch)
            .map_err(|source| MachineError::Ioevent { addr, source })
    }

    /// Has the event loop call `handler` whenever its fd is readable.
    pub fn add_event_handler(&mut self, handler: Box<dyn EventHandler>) {
        self.handlers.push(handler);
    }

    /// The eventfd a device writes to when the guest resets the machine (ends the VM).
    pub fn reset_evt(&self) -> Result<EventFd, MachineError> {
        self.reset_evt.try_clone().map_err(MachineError::EventFd)
    }

    /// A trigger for a device through which the guest resets the machine: it stops every vCPU
    /// before its next `KVM_RUN` (so the guest runs nothing after its reset request, not even
    /// its reboot fallbacks) and wakes the event loop.
    pub fn reset_trigger(&self) -> Result<ResetTrigger, MachineError> {
        Ok(ResetTrigger {
            evt: self.reset_evt()?,
            stop: self.stop.clone(),
        })
    }

    /// Creates the vCPUs, puts the boot processor at `entry`, starts every vCPU thread and
    /// returns the running VMM. `console` connects the host terminal to the guest's serial port.
    pub fn start(self, entry: EntryMode, aps: ApStart, console: Option<Console>) -> Result<Vmm, MachineError> {
        self.start_with(VcpuStart::Boot { entry, aps }, console, false)
    }

    /// As [`Machine::start`], for a boot or a restore; `paused` keeps the vCPUs parked until
    /// [`Vmm::resume`].
    pub fn start_with(self, start: VcpuStart, console: Option<Console>, paused: bool) -> Result<Vmm, MachineError> {
        install_kick_handler()?;
        let stop = self.stop;
        let pause = Arc::new(AtomicBool::new(paused));
        let caps = Arc::new(StateCaps::probe(&self.kvm));
        let pio = Arc::new(self.pio);
        let mmio = Arc::new(self.mmio);
        if let VcpuStart::Restore(states) = &start {
            if states.len() != usize::from(self.vcpus) {
                return Err(MachineError::VcpuCount {
                    saved: states.len(),
                    machine: self.vcpus,
                });
            }
        }
        let mut vcpus = Vec::with_capacity(usize::from(self.vcpus));
        for id in 0..self.vcpus {
            let mut vcpu = Vcpu::new(
                &self.kvm,
                &self.vm,
                id,
                self.vcpus,
                &self.host,
                VcpuShared {
                    pio: pio.clone(),
                    mmio: mmio.clone(),
                    stop: stop.clone(),
                    pause: pause.clone(),
                    caps: caps.clone(),
                },
            )?;
            if self.profile_interval.is_some() {
                vcpu.enable_profiling();
            }
            match &start {
                VcpuStart::Boot { entry, aps } => {
                    if id == 0 || *aps == ApStart::SameEntry {
                        vcpu.set_boot_state(&self.memory, *entry)?;
                    }
                    if id != 0 && *aps == ApStart::SameEntry {
                        vcpu.set_runnable()?;
                    }
                }
                VcpuStart::Restore(states) => {
                    if let Some(state) = states.get(usize::from(id)) {
                        vcpu.restore_state(state)?;
                    }
                }
            }
            vcpus.push(vcpu);
        }
        let parts = crate::vmm::VmmParts {
            vm: self.vm,
            memory: self.memory,
            vcpus,
            stop,
            pause,
            reset_evt: self.reset_evt,
            console,
            profile_interval: self.profile_interval,
            handlers: self.handlers,
            devices: self.devices,
            config: self.config,
            dirty_log: self.dirty_log,
        };
        Ok(Vmm::start(parts)?)
    }
}

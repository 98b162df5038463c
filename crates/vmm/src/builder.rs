//! Config → running Linux microVM: the one place where the machine is wired together.
//!
//! Order: check the config against the host, create KVM/memory/VM, load kernel + initrd +
//! command line, write boot information (zero page or PVH start_info), the MP table and the
//! ACPI tables, put the legacy devices (COM1, i8042) on the port bus with irqfds, then start
//! the vCPUs. A restore also gives the guest a new VM generation ID and raises the ACPI GED
//! interrupt once its vCPUs are back, so every clone reseeds its RNG.

use std::io::Write;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use devices::legacy::serial::SerialSnapshot;
use devices::legacy::{acpi_pm, i8042, serial, AcpiPm, SerialConsole, I8042};
use devices::rate_limiter::{Limits, MonotonicClock};
use devices::virtio::balloon::{Balloon, BalloonHandle};
use devices::virtio::net::{Passt, Tap};
use devices::virtio::{Block, Net, Rng, Vsock};
use devices::EventFdTrigger;
use virtio::{MmioTransport, TransportState, VirtioDevice, VirtioInterrupt, MMIO_LEN, NOTIFY_OFFSET};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::acpi::{self, AcpiState};
use crate::arch::layout::{MMIO_DEVICES_START, VIRTIO_LAST_GSI};
use crate::arch::{boot, mptable};
use crate::config::{
    check_memory, check_vcpus, host_ram_mib, ConfigError, DriveConfig, NetBackend, NetConfig, SerialLimit, VmConfig,
};
use crate::loader::{self, KernelEntry, LoadError};
use crate::machine::{AcpiHandle, ApStart, Machine, MachineError, VcpuStart, VirtioSlot};
use crate::vmm::{Console, EventHandler, Vmm};
use crate::vstate::memory::GuestMemory;
use crate::vstate::vm::open_kvm;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    BootInfo(#[from] boot::BootInfoError),
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    #[error("cannot tell the restored guest about its new VM generation ID")]
    GedInterrupt(#[source] std::io::Error),
    #[error("cannot open drive '{id}' ({path})")]
    DriveOpen {
        id: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Block(#[from] devices::virtio::block::BlockError),
    #[error(transparent)]
    Rng(#[from] devices::virtio::rng::RngError),
    #[error("cannot open tap device '{name}'")]
    TapOpen {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Net(#[from] devices::virtio::net::NetError),
    #[error(transparent)]
    Vsock(#[from] devices::virtio::vsock::VsockError),
    #[error("--net user")]
    Passt(#[from] devices::virtio::net::PasstError),
    #[error(transparent)]
    Balloon(#[from] devices::virtio::balloon::BalloonError),
    #[error("too many virtio devices: interrupt lines {first}..{last} are all taken")]
    TooManyDevices { first: u32, last: u32 },
    #[error("cannot restore the snapshot: {0}")]
    Restore(String),
    #[error("cannot set up the virtio device at {base:#x}")]
    VirtioEventFd {
        base: u64,
        #[source]
        source: std::io::Error,
    },
}

/// The host's terminal as seen by the guest's serial console.
pub struct ConsoleIo {
    pub output: Box<dyn Write + Send>,
    pub input: Option<RawFd>,
}

/// What a Linux guest must know about hearth's machine, added to every command line that does
/// not set these itself: the i8042 has a keyboard port only (no auxiliary port to probe, which
/// would cost the driver a 0.5 s timeout; no multiplexer) and is listed by neither PnP nor ACPI,
/// so the driver probes ports 0x60/0x64 directly.
pub const MACHINE_CMDLINE: &[&str] = &["i8042.noaux", "i8042.nomux", "i8042.nopnp"];

/// The full kernel command line: the user's (or hearth's default) plus the switches the host
/// needs (e.g. on PVM hosts), unless the user already set them.
pub fn effective_cmdline(user: &str, host_switches: &[&str]) -> String {
    let mut cmdline = user.trim().to_string();
    // Anything after " -- " goes to init: host switches must come before it.
    let (kernel_part, init_part) = match cmdline.find(" -- ") {
        Some(i) => (cmdline[..i].to_string(), cmdline[i..].to_string()),
        None if cmdline.starts_with("-- ") => (String::new(), format!(" {cmdline}")),
        None => (cmdline.clone(), String::new()),
    };
    let mut kernel_part = kernel_part;
    for sw in host_switches {
        let key = sw.split('=').next().unwrap_or(sw);
        let present = kernel_part
            .split_whitespace()
            .any(|w| w == *sw || w.starts_with(&format!("{key}=")) || w == key);
        if !present {
            if !kernel_part.is_empty() {
                kernel_part.push(' ');
            }
            kernel_part.push_str(sw);
        }
    }
    cmdline = kernel_part + &init_part;
    cmdline
}

/// Builds and starts a Linux microVM described by `config`.
pub fn build_linux(config: &VmConfig, io: ConsoleIo) -> Result<Vmm, BuildError> {
    let kvm = open_kvm().map_err(MachineError::from)?;
    let vcpus = check_vcpus(u32::from(config.vcpus), Machine::max_vcpus(&kvm))?;
    drop(kvm);
    let mem_mib = check_memory(config.mem_mib, host_ram_mib())?;
    let mem_size = mem_mib << 20;
    let mut machine = Machine::new(vcpus, mem_size)?;
    machine.profile_interval = config.profile_interval;
    if config.track_dirty_pages {
        machine.enable_dirty_log()?;
    }

    let kernel = loader::load_kernel(&machine.memory, &config.kernel, config.boot_protocol)?;
    let initrd = match &config.initrd {
        Some(p) => Some(loader::load_initrd(&machine.memory, mem_size, p, &kernel)?),
        None => None,
    };
    let virtio_args = attach_virtio_devices(&mut machine, config, None)?;
    let switches: Vec<&str> = MACHINE_CMDLINE
        .iter()
        .chain(machine.host.guest_cmdline)
        .copied()
        .collect();
    let cmdline = effective_cmdline(&config.cmdline, &switches);
    let cmdline = with_kernel_args(&cmdline, &virtio_args);
    log::info!("kernel command line: {cmdline}");
    let cmdline_len = loader::load_cmdline(&machine.memory, &cmdline)?;
    let boot_info = write_boot_info(&machine.memory, mem_size, &kernel, cmdline_len, initrd)?;
    mptable::write(&machine.memory, vcpus)?;
    let acpi_state = acpi::write(&machine.memory, vcpus)?;
    attach_acpi(&mut machine, acpi_state)?;

    let console = attach_legacy_devices(&mut machine, io, None, config.serial_limit)?;
    machine.config = Some(config.clone());
    let entry = kernel.entry.mode(boot_info);
    Ok(machine.start(entry, ApStart::WaitForSipi, Some(console))?)
}

/// Rebuilds a microVM from a snapshot: guest memory mapped from the memory file, the devices
/// of the saved configuration put back into their saved state, the in-kernel devices and the
/// vCPUs restored. With `paused`, the vCPUs wait for [`Vmm::resume`].
pub fn restore_linux(
    snap: crate::persist::MachineSnapshot,
    memory: GuestMemory,
    io: ConsoleIo,
    paused: bool,
) -> Result<Vmm, BuildError> {
    let config = &snap.config;
    let mut machine = Machine::with_memory(config.vcpus, memory)?;
    machine.profile_interval = config.profile_interval;
    if config.track_dirty_pages {
        machine.enable_dirty_log()?;
    }
    // The interrupt controllers first: restoring a device may raise its interrupt (vsock's
    // TRANSPORT_RESET, a UART with pending input), which must land on the restored irqchip.
    machine.vm.restore_state(&snap.vm).map_err(MachineError::from)?;
    attach_virtio_devices(&mut machine, config, Some(&snap.virtio))?;
    let console = attach_legacy_devices(&mut machine, io, Some(&snap.serial), config.serial_limit)?;
    // A restored guest is a new VM instance (possibly one of many clones): new generation ID.
    let ged = match snap.acpi {
        Some(state) => {
            acpi::new_generation_id(&machine.memory, &state)?;
            Some(attach_acpi(&mut machine, state)?)
        }
        None => None,
    };
    machine.config = Some(snap.config.clone());
    let vmm = machine.start_with(VcpuStart::Restore(snap.vcpus), Some(console), paused)?;
    // Only now: the vCPUs' local APIC state is restored, so the interrupt is not overwritten.
    // A paused guest takes it when it resumes.
    if let Some(ged) = ged {
        ged.write(1).map_err(BuildError::GedInterrupt)?;
    }
    Ok(vmm)
}

/// The ACPI fixed hardware the FADT names (the PM1 registers, whose S5 ends the VM like a
/// guest reset) and the Generic Event Device's interrupt line; returns the GED's trigger.
fn attach_acpi(machine: &mut Machine, state: AcpiState) -> Result<Arc<EventFd>, BuildError> {
    let pm = AcpiPm::new(Box::new(machine.reset_trigger()?));
    machine.insert_pio(Arc::new(Mutex::new(pm)), acpi_pm::PM_PORT, acpi_pm::PM_LEN)?;
    let ged = Arc::new(machine.irq_evt(state.ged_gsi)?);
    machine.devices.acpi = Some(AcpiHandle {
        state,
        ged: ged.clone(),
    });
    Ok(ged)
}

/// COM1 (from a snapshot's state, or fresh) and the i8042 on the port bus.
fn attach_legacy_devices(
    machine: &mut Machine,
    io: ConsoleIo,
    saved: Option<&SerialSnapshot>,
    limit: Option<SerialLimit>,
) -> Result<Console, BuildError> {
    let irq = EventFdTrigger::new(machine.irq_evt(serial::COM1_IRQ)?);
    let uart = match saved {
        Some(state) => SerialConsole::from_state(irq, io.output, state).map_err(BuildError::Restore)?,
        None => SerialConsole::new(irq, io.output),
    };
    let mut uart = uart;
    if let Some(l) = limit {
        uart.limit_output(l.bytes_per_sec, l.burst);
    }
    machine.devices.metrics.uart = Some(uart.metrics());
    let serial = Arc::new(Mutex::new(uart));
    machine.insert_pio(serial.clone(), serial::COM1_PORT, serial::COM1_LEN)?;
    let kbd_irq = EventFdTrigger::new(machine.irq_evt(i8042::I8042_KBD_IRQ)?);
    let i8042 = I8042::new(Box::new(kbd_irq), Box::new(machine.reset_trigger()?));
    machine.devices.metrics.i8042 = Some(i8042.metrics());
    let i8042 = Arc::new(Mutex::new(i8042));
    machine.insert_pio(i8042.clone(), i8042::I8042_PORT, i8042::I8042_LEN)?;
    machine.devices.i8042 = Some(i8042);
    machine.devices.serial = Some(serial.clone());
    Ok(Console {
        serial,
        input: io.input,
    })
}

/// First IOAPIC pin for virtio devices (0-4 are the legacy ISA devices hearth or Linux uses);
/// the last is `VIRTIO_LAST_GSI`.
const VIRTIO_FIRST_GSI: u32 = 5;

/// Adds `args` to the kernel's part of `cmdline` (before any ` -- `, which starts init's).
fn with_kernel_args(cmdline: &str, args: &[String]) -> String {
    if args.is_empty() {
        return cmdline.to_string();
    }
    let extra = args.join(" ");
    match cmdline.find(" -- ") {
        Some(i) => format!("{} {extra}{}", &cmdline[..i], &cmdline[i..]),
        None if cmdline.starts_with("-- ") => format!("{extra} {cmdline}"),
        None if cmdline.is_empty() => extra,
        None => format!("{cmdline} {extra}"),
    }
}

/// Creates the virtio devices the config asks for (drives in order, the entropy device, the
/// network interface, the vsock device, then the balloon), puts each on the MMIO bus — in the state `saved`
/// gives, when restoring a snapshot — and returns the kernel command-line entries that announce
/// them.
fn attach_virtio_devices(
    machine: &mut Machine,
    config: &VmConfig,
    saved: Option<&[TransportState]>,
) -> Result<Vec<String>, BuildError> {
    let mut devices: Vec<Arc<Mutex<dyn VirtioDevice>>> = Vec::new();
    for drive in &config.drives {
        let blk = open_drive(drive)?;
        machine.devices.metrics.blocks.push((drive.id.clone(), blk.metrics()));
        let blk = Arc::new(Mutex::new(blk));
        machine.devices.blocks.push((drive.id.clone(), blk.clone()));
        let fd = blk.lock().unwrap_or_else(|e| e.into_inner()).rate_limit_fd();
        if let Some(fd) = fd {
            machine.add_event_handler(Box::new(BlockRateLimitTimer { fd, dev: blk.clone() }));
        }
        devices.push(blk);
    }
    if config.rng {
        let rng = Rng::new()?;
        machine.devices.metrics.rng = Some(rng.metrics());
        devices.push(Arc::new(Mutex::new(rng)));
    }
    if let Some(net) = &config.net {
        let dev = open_net(net)?;
        let name = match &net.backend {
            crate::config::NetBackend::Tap(tap) => tap.clone(),
            crate::config::NetBackend::User { .. } => "user".to_string(),
        };
        machine.devices.metrics.nets.push((name, dev.metrics()));
        let net = Arc::new(Mutex::new(dev));
        let fd = net.lock().unwrap_or_else(|e| e.into_inner()).backend_fd();
        if let Some(fd) = fd {
            machine.add_event_handler(Box::new(NetBackendReady { fd, dev: net.clone() }));
        }
        let (rx_timer, tx_timer) = net.lock().unwrap_or_else(|e| e.into_inner()).rate_limit_fds();
        for (fd, rx) in [(rx_timer, true), (tx_timer, false)] {
            if let Some(fd) = fd {
                machine.add_event_handler(Box::new(NetRateLimitTimer {
                    fd,
                    dev: net.clone(),
                    rx,
                }));
            }
        }
        devices.push(net);
    }
    if let Some(v) = &config.vsock {
        let vsock = Arc::new(Mutex::new(Vsock::new(v.cid, &v.uds)?));
        let fd = vsock.lock().unwrap_or_else(|e| e.into_inner()).backend_fd();
        machine.add_event_handler(Box::new(VsockBackendReady { fd, dev: vsock.clone() }));
        devices.push(vsock);
    }
    if let Some(cfg) = &config.balloon {
        let guest_mib = u32::try_from(config.mem_mib).unwrap_or(u32::MAX);
        let balloon = BalloonHandle::new(Balloon::new(cfg.clone(), guest_mib)?);
        let dev = balloon.device();
        let fd = dev.lock().unwrap_or_else(|e| e.into_inner()).timer_fd();
        machine.add_event_handler(Box::new(BalloonStatsTimer { fd, dev: dev.clone() }));
        devices.push(dev);
        machine.devices.balloon = Some(balloon);
    }
    if let Some(saved) = saved {
        if saved.len() != devices.len() {
            return Err(BuildError::Restore(format!(
                "the snapshot has {} virtio devices, its configuration {}",
                saved.len(),
                devices.len()
            )));
        }
    }
    let mut args = Vec::with_capacity(devices.len());
    for (i, dev) in (0u32..).zip(devices) {
        let gsi = VIRTIO_FIRST_GSI + i;
        if gsi > VIRTIO_LAST_GSI {
            return Err(BuildError::TooManyDevices {
                first: VIRTIO_FIRST_GSI,
                last: VIRTIO_LAST_GSI,
            });
        }
        let base = MMIO_DEVICES_START + u64::from(i) * MMIO_LEN;
        let state = saved.and_then(|s| s.get(usize::try_from(i).unwrap_or(usize::MAX)));
        attach_virtio(machine, dev, base, gsi, state)?;
        args.push(format!("virtio_mmio.device=4K@{base:#x}:{gsi}"));
    }
    Ok(args)
}

/// Opens a drive's image: read-write unless `read_only`, O_DIRECT with `direct`.
pub(crate) fn open_image(path: &std::path::Path, read_only: bool, direct: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::File::options()
        .read(true)
        .write(!read_only)
        .custom_flags(if direct { libc::O_DIRECT } else { 0 })
        .open(path)
}

fn open_drive(drive: &DriveConfig) -> Result<Block, BuildError> {
    let file = open_image(&drive.path, drive.read_only, drive.direct).map_err(|source| BuildError::DriveOpen {
        id: drive.id.clone(),
        path: drive.path.display().to_string(),
        source,
    })?;
    let mut blk = Block::with_direct(file, drive.read_only, drive.direct, &drive.id)?;
    // Every drive gets a limiter (unlimited by default: it admits everything), so that
    // `PATCH /drives` can set limits after boot without a new fd for the event loop.
    let limits = Limits {
        bps: drive.bps,
        iops: drive.iops,
        ..Limits::default()
    };
    blk.set_rate_limit(limits, Box::new(MonotonicClock::default()))?;
    Ok(blk)
}

/// Lets a rate-limited drive take requests again when its limiter's timer fires.
struct BlockRateLimitTimer {
    /// Owned by the drive's limiter, which this handler keeps alive.
    fd: RawFd,
    dev: Arc<Mutex<Block>>,
}

impl EventHandler for BlockRateLimitTimer {
    fn fd(&self) -> RawFd {
        self.fd
    }
    fn on_readable(&mut self) {
        self.dev
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rate_limit_timer_fired();
    }
}

fn open_net(net: &NetConfig) -> Result<Net, BuildError> {
    let backend: Box<dyn devices::virtio::net::Backend> = match &net.backend {
        NetBackend::Tap(name) => Box::new(Tap::open(name).map_err(|source| BuildError::TapOpen {
            name: name.clone(),
            source,
        })?),
        // Started from this (the main) thread, which outlives the VM: passt's parent-death
        // signal follows the thread that spawned it.
        NetBackend::User { forwards } => Box::new(Passt::spawn("passt", forwards)?),
    };
    let mut dev = Net::new(backend, net.mac)?;
    let limits = |l: crate::config::NetLimit| Limits {
        bps: l.bps,
        iops: l.pps,
        ..Limits::default()
    };
    if net.rx_limit != crate::config::NetLimit::default() || net.tx_limit != crate::config::NetLimit::default() {
        dev.set_rate_limits(limits(net.rx_limit), limits(net.tx_limit), &|| {
            Box::new(MonotonicClock::default())
        })?;
    }
    Ok(dev)
}

/// Lets a rate-limited network interface move frames again when a limiter's timer fires.
struct NetRateLimitTimer {
    /// Owned by the interface's limiter, which this handler keeps alive.
    fd: RawFd,
    dev: Arc<Mutex<Net>>,
    rx: bool,
}

impl EventHandler for NetRateLimitTimer {
    fn fd(&self) -> RawFd {
        self.fd
    }
    fn on_readable(&mut self) {
        let mut dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        if self.rx {
            dev.rx_rate_limit_fired();
        } else {
            dev.tx_rate_limit_fired();
        }
    }
}

/// Delivers frames arriving on a network device's host backend (tap or passt) to the guest,
/// and resumes transmit once passt took queued frames.
struct NetBackendReady {
    /// Owned by the device, which this handler keeps alive.
    fd: RawFd,
    dev: Arc<Mutex<Net>>,
}

impl EventHandler for NetBackendReady {
    fn fd(&self) -> RawFd {
        self.fd
    }
    fn on_readable(&mut self) {
        self.dev.lock().unwrap_or_else(|e| e.into_inner()).backend_event();
    }
}

/// Asks the balloon's driver for fresh statistics when the polling timer expires.
struct BalloonStatsTimer {
    /// Owned by the device, which this handler keeps alive.
    fd: RawFd,
    dev: Arc<Mutex<Balloon>>,
}

impl EventHandler for BalloonStatsTimer {
    fn fd(&self) -> RawFd {
        self.fd
    }
    fn on_readable(&mut self) {
        self.dev.lock().unwrap_or_else(|e| e.into_inner()).stats_timer_fired();
    }
}

/// Moves vsock data when one of the device's host sockets has news (the fd is the device's
/// own epoll holding its listener and connection sockets).
struct VsockBackendReady {
    /// Owned by the device, which this handler keeps alive.
    fd: RawFd,
    dev: Arc<Mutex<Vsock>>,
}

impl EventHandler for VsockBackendReady {
    fn fd(&self) -> RawFd {
        self.fd
    }
    fn on_readable(&mut self) {
        self.dev.lock().unwrap_or_else(|e| e.into_inner()).backend_event();
    }
}

/// One virtio device at `base` with interrupt line `gsi`: the transport on the MMIO bus, an
/// irqfd, and per queue an ioeventfd on QueueNotify (datamatch = queue index) plus an event-loop
/// handler that runs the queue. Public for the tiny-guest tests, which attach a device the same way.
pub fn attach_virtio(
    machine: &mut Machine,
    dev: Arc<Mutex<dyn VirtioDevice>>,
    base: u64,
    gsi: u32,
    saved: Option<&TransportState>,
) -> Result<(), BuildError> {
    let trigger = Arc::new(EventFdTrigger::new(machine.irq_evt(gsi)?));
    let interrupt = VirtioInterrupt::new(trigger);
    let mut transport = MmioTransport::new(dev.clone(), machine.memory.clone(), interrupt);
    if let Some(state) = saved {
        transport
            .restore_state(state)
            .map_err(|e| BuildError::Restore(format!("virtio device at {base:#x}: {e}")))?;
    }
    let transport = Arc::new(Mutex::new(transport));
    machine.insert_mmio(transport.clone(), base, MMIO_LEN)?;
    machine.devices.virtio.push(VirtioSlot { base, gsi, transport });
    let evts = {
        let d = dev.lock().unwrap_or_else(|e| e.into_inner());
        d.queue_evts()
            .iter()
            .map(EventFd::try_clone)
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|source| BuildError::VirtioEventFd { base, source })?
    };
    for (queue, evt) in (0u32..).zip(evts) {
        machine.register_ioevent(&evt, base + NOTIFY_OFFSET, queue)?;
        machine.add_event_handler(Box::new(QueueKick {
            evt,
            dev: dev.clone(),
            queue: usize::try_from(queue).unwrap_or(usize::MAX),
        }));
    }
    Ok(())
}

/// Runs a virtio queue on the event loop when the guest kicks it.
struct QueueKick {
    evt: EventFd,
    dev: Arc<Mutex<dyn VirtioDevice>>,
    queue: usize,
}

impl EventHandler for QueueKick {
    fn fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.evt.as_raw_fd()
    }
    fn on_readable(&mut self) {
        // Reading resets the counter; several kicks since the last time are one queue run.
        let _ = self.evt.read();
        let mut dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        dev.process_queue(self.queue);
    }
}

fn write_boot_info(
    mem: &GuestMemory,
    mem_size: u64,
    kernel: &loader::LoadedKernel,
    cmdline_len: usize,
    initrd: Option<boot::InitrdRange>,
) -> Result<u64, boot::BootInfoError> {
    match kernel.entry {
        KernelEntry::Pvh(_) => boot::write_pvh_start_info(mem, mem_size, initrd),
        KernelEntry::Linux64(_) => {
            boot::write_zero_page(mem, mem_size, kernel.setup_header.as_deref(), cmdline_len, initrd)
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    #[test]
    fn host_switches_are_added_before_init_args_once() {
        let sw = ["noxsave", "clearcpuid=popcnt,smap"];
        assert_eq!(
            effective_cmdline("console=ttyS0", &sw),
            "console=ttyS0 noxsave clearcpuid=popcnt,smap"
        );
        assert_eq!(
            effective_cmdline("console=ttyS0 -- /bin/sh -c 'echo hi'", &sw),
            "console=ttyS0 noxsave clearcpuid=popcnt,smap -- /bin/sh -c 'echo hi'"
        );
        assert_eq!(
            effective_cmdline("noxsave clearcpuid=popcnt", &sw),
            "noxsave clearcpuid=popcnt"
        );
        assert_eq!(effective_cmdline("a", &[]), "a");
        assert_eq!(effective_cmdline("-- x", &["noxsave"]), "noxsave -- x");
        // The user's own i8042 setting wins over hearth's.
        assert_eq!(
            effective_cmdline("i8042.noaux=0", MACHINE_CMDLINE),
            "i8042.noaux=0 i8042.nomux i8042.nopnp"
        );
    }

    #[test]
    fn virtio_entries_go_before_init_args() {
        let a = vec!["virtio_mmio.device=4K@0xd0000000:5".to_string(), "v2".to_string()];
        assert_eq!(
            with_kernel_args("console=ttyS0 -- /bin/sh -c 'x -- y'", &a),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 v2 -- /bin/sh -c 'x -- y'"
        );
        assert_eq!(with_kernel_args("a", &a), "a virtio_mmio.device=4K@0xd0000000:5 v2");
        assert_eq!(with_kernel_args("-- x", &a[1..]), "v2 -- x");
        assert_eq!(with_kernel_args("a", &[]), "a");
    }
}

//! The running VMM: vCPU threads plus the main thread's event loop.
//!
//! The event loop (epoll) waits for: a vCPU stopping, the guest's reset request (i8042),
//! SIGINT/SIGTERM (through a signalfd; the signals are blocked in every thread), host input for
//! the serial console, device events ([`EventHandler`]s, e.g. virtio queue kicks arriving by
//! ioeventfd), and an optional deadline. Whatever comes first decides the [`VmExit`];
//! then every vCPU is stopped and joined, and the exit statistics are collected.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::legacy::SerialConsole;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::Killable;

use crate::config::VmConfig;
use crate::console_input::{ConsoleInput, Typed};
use crate::machine::DeviceHandles;
use crate::vstate::exits::{ExitCounters, ExitStats};
use crate::vstate::memory::GuestMemory;
use crate::vstate::vcpu::{kick_signal, StopReason, Vcpu, VcpuChannels, VcpuReply, VcpuRequest};
use crate::vstate::vm::Vm;

mod pause;

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("cannot set up the event loop")]
    Epoll(#[source] std::io::Error),
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("cannot block SIGINT/SIGTERM for the signalfd")]
    Signals(#[source] std::io::Error),
    #[error("cannot start the thread of vCPU {0}")]
    Spawn(u8, #[source] std::io::Error),
    #[error("vCPU {0} did not pause within {STOP_TIMEOUT:?}")]
    PauseTimeout(u8),
    #[error("vCPU {0} has stopped; the VM is ending")]
    VcpuGone(u8),
    #[error("the VM must be paused first")]
    NotPaused,
    #[error(transparent)]
    VcpuState(#[from] crate::vstate::vcpu_state::VcpuStateError),
}

/// How the VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest reset or powered off the machine (its way to shut down: `reboot`/`poweroff`).
    GuestShutdown,
    /// A vCPU triple-faulted.
    TripleFault,
    /// The host sent this signal (SIGINT/SIGTERM), or the user typed the console escape.
    Signal(i32),
    /// The deadline given to [`Vmm::run`] passed.
    Timeout,
    /// A vCPU hit something hearth cannot handle; the message says what and where.
    Failed(String),
}

/// Result of a VM run.
#[derive(Debug)]
pub struct RunSummary {
    pub exit: VmExit,
    /// Per-vCPU exit counters, indexed by vCPU id.
    pub stats: Vec<ExitStats>,
    /// Process and guest memory at the end of the run.
    pub memory: crate::vstate::residency::MemoryUsage,
}

/// The host side of the serial console: the UART and the host's input fd.
pub struct Console {
    pub serial: Arc<Mutex<SerialConsole>>,
    /// Host input (usually stdin); `None` runs without input.
    pub input: Option<RawFd>,
}

type VcpuReport = (u8, StopReason, ExitStats);

/// A file descriptor the event loop watches for a device, and what to do when it is readable.
/// Handlers run on the event loop thread, never on a vCPU thread.
pub trait EventHandler: Send {
    fn fd(&self) -> RawFd;
    fn on_readable(&mut self);
}

/// The VMM's control plane (the HTTP API): one fd the event loop watches, and what to do when
/// it is readable, with the whole running VMM at hand (pause, snapshot, ...). Runs on the event
/// loop thread; it must never block.
pub trait Controller {
    fn fd(&self) -> RawFd;
    /// Returns `Some` to end the VM (e.g. a shutdown request).
    fn on_readable(&mut self, vmm: &mut Vmm) -> Option<VmExit>;
}

/// Everything a VMM is started from (built by [`crate::Machine::start`]).
pub struct VmmParts {
    pub vm: Vm,
    pub memory: GuestMemory,
    pub vcpus: Vec<Vcpu>,
    pub stop: Arc<AtomicBool>,
    /// Set while the VM is (to be) paused; vCPUs check it before every `KVM_RUN`.
    pub pause: Arc<AtomicBool>,
    pub reset_evt: EventFd,
    pub console: Option<Console>,
    pub profile_interval: Option<Duration>,
    pub handlers: Vec<Box<dyn EventHandler>>,
    pub devices: DeviceHandles,
    pub config: Option<VmConfig>,
    pub dirty_log: bool,
}

pub struct Vmm {
    // The VM and its memory must outlive the vCPU threads.
    vm: Vm,
    memory: GuestMemory,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    /// Whether every vCPU is parked (acknowledged the pause).
    paused: bool,
    /// Requests to each vCPU thread (by id) and their replies (see `VcpuRequest`).
    vcpu_requests: Vec<Sender<VcpuRequest>>,
    vcpu_replies: Receiver<(u8, VcpuReply)>,
    reports: Receiver<VcpuReport>,
    vcpu_exit_evt: EventFd,
    reset_evt: EventFd,
    console: Option<Console>,
    /// Reports received by the event loop before shutdown.
    early: Vec<VcpuReport>,
    profiler: Option<JoinHandle<()>>,
    handlers: Vec<Box<dyn EventHandler>>,
    devices: DeviceHandles,
    config: Option<VmConfig>,
    dirty_log: bool,
    /// Each vCPU's live exit counts, by id.
    exit_counters: Vec<Arc<ExitCounters>>,
    /// Device events (handler wake-ups) served by the event loop.
    device_events: Arc<devices::metrics::Counter>,
}

const TOKEN_VCPU: u64 = 1;
const TOKEN_RESET: u64 = 2;
const TOKEN_SIGNAL: u64 = 3;
const TOKEN_INPUT: u64 = 4;
const TOKEN_CONTROL: u64 = 5;
/// Event handler `i` has token `TOKEN_HANDLERS + i`.
const TOKEN_HANDLERS: u64 = 16;

impl Vmm {
    pub(crate) fn start(parts: VmmParts) -> Result<Self, VmmError> {
        let VmmParts {
            vm,
            memory,
            vcpus,
            stop,
            pause,
            reset_evt,
            console,
            profile_interval,
            handlers,
            devices,
            config,
            dirty_log,
        } = parts;
        let (tx, rx) = std::sync::mpsc::channel::<VcpuReport>();
        let (reply_tx, vcpu_replies) = std::sync::mpsc::channel();
        block_exit_signals()?;
        let vcpu_exit_evt = EventFd::new(EFD_NONBLOCK).map_err(VmmError::EventFd)?;
        let mut threads = Vec::new();
        let mut vcpu_requests = Vec::new();
        let exit_counters = vcpus.iter().map(Vcpu::exit_counters).collect();
        for mut vcpu in vcpus {
            let id = vcpu.id();
            let (req_tx, requests) = std::sync::mpsc::channel();
            vcpu.set_channels(VcpuChannels {
                requests,
                replies: reply_tx.clone(),
            });
            vcpu_requests.push(req_tx);
            let tx = tx.clone();
            let evt = vcpu_exit_evt.try_clone().map_err(VmmError::EventFd)?;
            let t = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    let (reason, stats) = vcpu.run();
                    let _ = tx.send((id, reason, stats));
                    let _ = evt.write(1);
                })
                .map_err(|e| VmmError::Spawn(id, e))?;
            threads.push(t);
        }
        let profiler = match profile_interval {
            Some(interval) => Some(spawn_profiler(&threads, interval, stop.clone())?),
            None => None,
        };
        let start_paused = pause.load(Ordering::Acquire);
        let mut vmm = Self {
            vm,
            memory,
            threads,
            stop,
            pause,
            paused: false,
            vcpu_requests,
            vcpu_replies,
            reports: rx,
            vcpu_exit_evt,
            reset_evt,
            console,
            early: Vec::new(),
            profiler,
            handlers,
            devices,
            config,
            dirty_log,
            exit_counters,
            device_events: Arc::default(),
        };
        if start_paused {
            vmm.wait_parked()?;
        }
        Ok(vmm)
    }

    /// The VM (for its in-kernel device state) and guest memory.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    pub fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    /// Whether KVM logs the guest's writes (diff snapshots are possible).
    pub fn dirty_tracking(&self) -> bool {
        self.dirty_log
    }

    /// The devices a snapshot saves.
    pub fn devices(&self) -> &DeviceHandles {
        &self.devices
    }

    /// Each vCPU's exit counts by reason, by id, live while the VM runs.
    pub fn exit_counters(&self) -> &[Arc<ExitCounters>] {
        &self.exit_counters
    }

    /// How many device events the event loop has served.
    pub fn device_events(&self) -> Arc<devices::metrics::Counter> {
        self.device_events.clone()
    }

    /// Has the event loop also watch `handler` (e.g. a periodic timer added after the build).
    /// Takes effect when [`Vmm::run_controlled`] starts the loop.
    pub fn add_event_handler(&mut self, handler: Box<dyn EventHandler>) {
        self.handlers.push(handler);
    }

    /// What the VM was built from (`None` for machines built by hand, e.g. test guests).
    pub fn config(&self) -> Option<&VmConfig> {
        self.config.as_ref()
    }

    /// The configuration, for changes made while the VM runs (so snapshots and
    /// `GET /vm/config` see them).
    pub fn config_mut(&mut self) -> Option<&mut VmConfig> {
        self.config.as_mut()
    }

    /// Runs until the VM ends (or `deadline` passes), then stops and joins every vCPU.
    pub fn run(self, deadline: Option<Duration>) -> RunSummary {
        self.run_controlled(deadline, None)
    }

    /// As [`Vmm::run`], with a control plane (the API) served from the event loop.
    pub fn run_controlled(mut self, deadline: Option<Duration>, controller: Option<&mut dyn Controller>) -> RunSummary {
        let exit = match self.event_loop(deadline, controller) {
            Ok(exit) => exit,
            Err(e) => VmExit::Failed(format!("event loop: {e}")),
        };
        let stats = self.shutdown();
        let memory = crate::vstate::residency::measure(&self.memory);
        RunSummary { exit, stats, memory }
    }

    fn event_loop(
        &mut self,
        deadline: Option<Duration>,
        mut controller: Option<&mut dyn Controller>,
    ) -> std::io::Result<VmExit> {
        let started = Instant::now();
        let epoll = Epoll::new()?;
        let sigfd = signalfd()?;
        let add = |fd: RawFd, token: u64| epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, token));
        add(self.vcpu_exit_evt.as_raw_fd(), TOKEN_VCPU)?;
        add(self.reset_evt.as_raw_fd(), TOKEN_RESET)?;
        add(sigfd.as_raw_fd(), TOKEN_SIGNAL)?;
        for (token, h) in (TOKEN_HANDLERS..).zip(&self.handlers) {
            add(h.fd(), token)?;
        }
        if let Some(c) = &controller {
            add(c.fd(), TOKEN_CONTROL)?;
        }
        let input = self.console.as_ref().and_then(|c| c.input);
        if let Some(fd) = input {
            // A regular file or /dev/null cannot be polled; such input is simply not read.
            if add(fd, TOKEN_INPUT).is_err() {
                log::debug!("console input fd {fd} cannot be polled; running without input");
            }
        }
        let mut typed = ConsoleInput::default();
        let mut events = vec![EpollEvent::default(); 8];
        loop {
            let mut timeout_ms: i32 = -1;
            if let Some(d) = deadline {
                let left = d.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Ok(VmExit::Timeout);
                }
                timeout_ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
            }
            if !typed.pending().is_empty() {
                // The guest has not drained its receive FIFO yet: retry soon.
                timeout_ms = if timeout_ms < 0 { 10 } else { timeout_ms.min(10) };
                self.feed_console(&mut typed);
            }
            let n = match epoll.wait(timeout_ms, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_VCPU => {
                        let _ = self.vcpu_exit_evt.read();
                        while let Ok((id, reason, stats)) = self.reports.try_recv() {
                            let exit = match &reason {
                                StopReason::Stopped => None,
                                StopReason::GuestReset | StopReason::GuestPowerOff => Some(VmExit::GuestShutdown),
                                StopReason::TripleFault => Some(VmExit::TripleFault),
                                StopReason::Failed(m) => Some(VmExit::Failed(m.clone())),
                            };
                            self.early.push((id, reason, stats));
                            if let Some(exit) = exit {
                                return Ok(exit);
                            }
                        }
                    }
                    TOKEN_RESET => {
                        let _ = self.reset_evt.read();
                        return Ok(VmExit::GuestShutdown);
                    }
                    TOKEN_SIGNAL => {
                        let mut info = [0u8; 128];
                        let mut f = std::fs::File::from(sigfd.try_clone()?);
                        if f.read(&mut info)? >= 4 {
                            let signo = i32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
                            return Ok(VmExit::Signal(signo));
                        }
                    }
                    TOKEN_CONTROL => {
                        if let Some(c) = controller.as_deref_mut() {
                            if let Some(exit) = c.on_readable(self) {
                                return Ok(exit);
                            }
                        }
                    }
                    TOKEN_INPUT => {
                        let Some(fd) = input else { continue };
                        let mut buf = [0u8; 256];
                        // SAFETY: reading into a local buffer of the given length from an fd the
                        // console owner keeps open for the VM's lifetime.
                        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                        if r <= 0 {
                            // EOF or error: stop watching the input, keep the VM running.
                            let _ = epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
                            continue;
                        }
                        if typed.push(&buf[..usize::try_from(r).unwrap_or(0)]) == Typed::Quit {
                            return Ok(VmExit::Signal(libc::SIGINT));
                        }
                        self.feed_console(&mut typed);
                    }
                    token => {
                        let i = token.checked_sub(TOKEN_HANDLERS).and_then(|i| usize::try_from(i).ok());
                        if let Some(h) = i.and_then(|i| self.handlers.get_mut(i)) {
                            self.device_events.inc();
                            h.on_readable();
                        }
                    }
                }
            }
        }
    }

    fn feed_console(&self, typed: &mut ConsoleInput) {
        if let Some(c) = &self.console {
            let mut serial = c.serial.lock().unwrap_or_else(|e| e.into_inner());
            let n = serial.enqueue_input(typed.pending());
            typed.consumed(n);
        }
    }

    /// Stops every vCPU thread (kicking it out of KVM_RUN) and returns their counters.
    fn shutdown(&mut self) -> Vec<ExitStats> {
        self.stop.store(true, Ordering::Release);
        // Parked vCPUs wait for a request, not a signal.
        for tx in &self.vcpu_requests {
            let _ = tx.send(VcpuRequest::Finish);
        }
        // The profiler signals vCPU threads by pthread id: it must be gone before they are joined.
        if let Some(p) = self.profiler.take() {
            let _ = p.join();
        }
        let mut reports: Vec<VcpuReport> = std::mem::take(&mut self.early);
        let n = self.threads.len();
        let start = Instant::now();
        let mut last_nmi = start;
        while reports.len() < n && start.elapsed() < STOP_TIMEOUT {
            for (id, t) in self.threads.iter().enumerate() {
                if t.is_finished() {
                    continue;
                }
                let _ = t.kill(kick_signal());
                // A vCPU halted with interrupts off (e.g. in the guest's stop_this_cpu() after
                // another CPU asked for a reset) may not notice the signal on some hosts (PVM).
                // An NMI wakes any halted CPU, and the pending signal then ends KVM_RUN.
                if last_nmi.elapsed() >= NMI_KICK_AFTER {
                    self.nmi(id);
                }
            }
            if last_nmi.elapsed() >= NMI_KICK_AFTER {
                last_nmi = Instant::now();
            }
            if let Ok(r) = self.reports.recv_timeout(Duration::from_millis(20)) {
                reports.push(r);
            }
        }
        for (id, t) in self.threads.drain(..).enumerate() {
            // A thread that has sent its report returns right after: join it.
            let reported = reports.iter().any(|r| usize::from(r.0) == id);
            if reported || t.is_finished() {
                let _ = t.join();
            } else {
                log::error!("vCPU {id} did not stop within {STOP_TIMEOUT:?}; leaving its thread behind");
            }
        }
        let mut stats: Vec<ExitStats> = (0..n).map(|_| ExitStats::default()).collect();
        for (id, _, s) in reports {
            if let Some(slot) = stats.get_mut(usize::from(id)) {
                *slot = s;
            }
        }
        stats
    }
}

impl Vmm {
    /// Sends an NMI to the vCPU with APIC ID `id` (vCPU ids are APIC IDs) through KVM_SIGNAL_MSI,
    /// a VM ioctl that does not wait for the vCPU.
    fn nmi(&self, id: usize) {
        const MSI_ADDR: u32 = 0xfee0_0000;
        const DELIVERY_NMI: u32 = 0x4 << 8;
        let Ok(id) = u32::try_from(id) else { return };
        let msi = kvm_bindings::kvm_msi {
            address_lo: MSI_ADDR | (id << 12),
            data: DELIVERY_NMI,
            ..Default::default()
        };
        if let Err(e) = self.vm.fd().signal_msi(msi) {
            log::debug!("cannot send an NMI to vCPU {id}: {e}");
        }
    }
}

/// How long shutdown waits for vCPU threads to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// When kicks alone have not stopped a vCPU for this long, NMIs are sent too.
const NMI_KICK_AFTER: Duration = Duration::from_millis(200);

/// Kicks every vCPU thread every `interval` so that each records its guest RIP.
fn spawn_profiler(
    threads: &[JoinHandle<()>],
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, VmmError> {
    use std::os::unix::thread::JoinHandleExt;
    let ids: Vec<libc::pthread_t> = threads.iter().map(|t| t.as_pthread_t()).collect();
    std::thread::Builder::new()
        .name("profiler".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(interval);
                for id in &ids {
                    // SAFETY: the vCPU threads are joined only after this thread has been joined
                    // (Vmm::shutdown), so every id still names a live or unjoined thread.
                    unsafe { libc::pthread_kill(*id, kick_signal()) };
                }
            }
        })
        .map_err(|e| VmmError::Spawn(u8::MAX, e))
}

fn exit_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and modify a local sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT/SIGTERM in this thread (and so in the vCPU threads it spawns), so that they
/// are only ever seen through the event loop's signalfd.
fn block_exit_signals() -> Result<(), VmmError> {
    let set = exit_sigset();
    // SAFETY: `set` is a valid sigset; a null old-set pointer is allowed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(VmmError::Signals(std::io::Error::from_raw_os_error(r)));
    }
    Ok(())
}

fn signalfd() -> std::io::Result<OwnedFd> {
    let set = exit_sigset();
    // SAFETY: `set` is a valid sigset; -1 asks for a new fd.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

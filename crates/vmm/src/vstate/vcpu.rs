//! A vCPU: its initial state and the thread that runs it.
//!
//! This is where every `KVM_RUN` exit goes: port and MMIO accesses to the [`Bus`]es, emulation
//! failures to the `fixup` crate, shutdowns and system events to the VMM as a [`StopReason`].
//! Each vCPU runs on its own thread; the VMM stops it by setting the shared `stop` flag and
//! kicking the thread with [`KICK_SIGNAL`], which makes `KVM_RUN` return with EINTR.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use bus::{Bus, Dispatch};
use kvm_bindings::{kvm_mp_state, Msrs, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};

use super::exits::{ExitCounters, ExitKind, ExitStats};
use super::vcpu_state::{StateCaps, VcpuState, VcpuStateError};
use super::vm::Vm;
use crate::arch::{cpuid, msr, regs};
use crate::host::HostProfile;
use crate::vstate::memory::GuestMemory;

/// Real-time signal used to kick a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("cannot create vCPU {id}")]
    Create {
        id: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot set up vCPU {id}: {what}")]
    Setup {
        id: u8,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot write vCPU {id} boot structures")]
    Boot {
        id: u8,
        #[source]
        source: regs::WriteError,
    },
    #[error("cannot build vCPU {id} MSR list")]
    Msrs { id: u8 },
    #[error("cannot install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
}

/// Why a vCPU stopped running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The VMM asked it to stop.
    Stopped,
    /// The guest asked for a reset (KVM system event).
    GuestReset,
    /// The guest asked to power off (KVM system event).
    GuestPowerOff,
    /// Triple fault: the CPU shut down (`KVM_EXIT_SHUTDOWN`).
    TripleFault,
    /// An exit hearth cannot complete; the message says what and where.
    Failed(String),
}

/// What all vCPUs of a VM share: the buses their exits go to, the stop and pause flags, and
/// what the host lets a snapshot save.
#[derive(Clone)]
pub struct VcpuShared {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub stop: Arc<AtomicBool>,
    pub pause: Arc<AtomicBool>,
    pub caps: Arc<StateCaps>,
}

/// What the VMM asks of a paused vCPU thread (see [`Vcpu::park`]).
#[derive(Debug)]
pub enum VcpuRequest {
    /// Read the vCPU's state (for a snapshot) and send it back.
    SaveState,
    /// Go back to running the guest.
    Resume,
    /// Leave the run loop: the VM is ending.
    Finish,
}

/// What a vCPU thread tells the VMM while the VM is paused.
#[derive(Debug)]
pub enum VcpuReply {
    /// The thread is out of `KVM_RUN` and waits for requests.
    Paused,
    State(Box<Result<VcpuState, VcpuStateError>>),
}

/// The thread side of the channels between the VMM and one vCPU.
pub struct VcpuChannels {
    pub requests: Receiver<VcpuRequest>,
    /// Shared by all vCPUs of the VM; each reply carries the vCPU id.
    pub replies: Sender<(u8, VcpuReply)>,
}

pub struct Vcpu {
    fd: VcpuFd,
    id: u8,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    caps: Arc<StateCaps>,
    channels: Option<VcpuChannels>,
    stats: ExitStats,
    /// Record the guest RIP at every kick (the sampling profiler is on).
    profile: bool,
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Sets the delivery mode (bits 10:8) of the LVT register at `off` in the LAPIC register page
/// (`c_char` bytes as KVM's `kvm_lapic_state` has them).
fn set_lvt_mode(regs: &mut [std::os::raw::c_char], off: usize, mode: u32) {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = regs[off + i].to_ne_bytes()[0];
    }
    let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
    for (i, x) in v.to_le_bytes().iter().enumerate() {
        regs[off + i] = std::os::raw::c_char::from_ne_bytes([*x]);
    }
}

impl Vcpu {
    /// Creates vCPU `id` of `ncpus` with CPUID, MSRs, FPU and LAPIC LINT pins set up.
    pub fn new(
        kvm: &Kvm,
        vm: &Vm,
        id: u8,
        ncpus: u8,
        host: &HostProfile,
        shared: VcpuShared,
    ) -> Result<Self, VcpuError> {
        let VcpuShared {
            pio,
            mmio,
            stop,
            pause,
            caps,
        } = shared;
        let setup = |what| move |source| VcpuError::Setup { id, what, source };
        let fd = vm
            .fd()
            .create_vcpu(u64::from(id))
            .map_err(|source| VcpuError::Create { id, source })?;
        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(setup("read supported CPUID"))?;
        cpuid::filter(&mut cpuid, id, ncpus, host);
        fd.set_cpuid2(&cpuid).map_err(setup("set CPUID"))?;
        let msrs: Msrs = msr::boot_msrs().map_err(|_| VcpuError::Msrs { id })?;
        fd.set_msrs(&msrs).map_err(setup("set MSRs"))?;
        fd.set_fpu(&regs::boot_fpu()).map_err(setup("set FPU"))?;
        let mut lapic = fd.get_lapic().map_err(setup("read LAPIC"))?;
        set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
        fd.set_lapic(&lapic).map_err(setup("set LAPIC"))?;
        Ok(Self {
            fd,
            id,
            pio,
            mmio,
            stop,
            pause,
            caps,
            channels: None,
            stats: ExitStats::default(),
            profile: false,
        })
    }

    pub fn id(&self) -> u8 {
        self.id
    }

    /// This vCPU's exit counts, readable while it runs.
    pub fn exit_counters(&self) -> Arc<ExitCounters> {
        self.stats.counters()
    }

    /// Puts the vCPU at the kernel entry point in `mode` (the boot processor; application
    /// processors wait for INIT/SIPI from the guest, as on real hardware).
    pub fn set_boot_state(&self, mem: &GuestMemory, mode: regs::EntryMode) -> Result<(), VcpuError> {
        let id = self.id;
        let setup = |what| move |source| VcpuError::Setup { id, what, source };
        let sregs = self.fd.get_sregs().map_err(setup("read special registers"))?;
        let sregs = regs::setup_sregs(mem, mode, sregs).map_err(|source| VcpuError::Boot { id, source })?;
        self.fd.set_sregs(&sregs).map_err(setup("set special registers"))?;
        self.fd
            .set_regs(&regs::boot_regs(mode))
            .map_err(setup("set registers"))?;
        Ok(())
    }

    /// Makes an application processor runnable without INIT/SIPI (tiny test guests start all
    /// vCPUs at the same entry point).
    pub fn set_runnable(&self) -> Result<(), VcpuError> {
        let id = self.id;
        self.fd
            .set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            })
            .map_err(|source| VcpuError::Setup {
                id,
                what: "set MP state",
                source,
            })
    }

    /// Records the guest RIP each time the vCPU is kicked (by the profiler thread).
    pub fn enable_profiling(&mut self) {
        self.profile = true;
    }

    /// Direct access for tests and the fix-up path.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Loads a snapshot's state into this (new, not yet running) vCPU.
    pub fn restore_state(&self, state: &VcpuState) -> Result<(), VcpuStateError> {
        state.restore(&self.fd)
    }

    /// Connects the vCPU to the VMM's pause/snapshot requests (before its thread starts).
    pub fn set_channels(&mut self, channels: VcpuChannels) {
        self.channels = Some(channels);
    }

    /// Runs the guest until it stops; returns why, and this vCPU's exit counters.
    pub fn run(mut self) -> (StopReason, ExitStats) {
        self.stats.first_run = Some(std::time::Instant::now());
        let reason = loop {
            if self.stop.load(Ordering::Acquire) {
                break StopReason::Stopped;
            }
            if self.pause.load(Ordering::Acquire) {
                if self.park() {
                    continue;
                }
                break StopReason::Stopped;
            }
            if let Some(reason) = self.run_once() {
                break reason;
            }
        };
        (reason, self.stats)
    }

    /// The VM is paused: tell the VMM, then serve its requests until it resumes the VM (true)
    /// or ends it (false). The vCPU is out of `KVM_RUN` all that time, so its state is stable.
    fn park(&mut self) -> bool {
        let Some(ch) = &self.channels else {
            // A vCPU without channels (never in practice) cannot be paused: keep running.
            return true;
        };
        if ch.replies.send((self.id, VcpuReply::Paused)).is_err() {
            return false;
        }
        loop {
            match ch.requests.recv() {
                Ok(VcpuRequest::SaveState) => {
                    let state = VcpuState::save(&self.caps, &self.fd, self.id);
                    if ch.replies.send((self.id, VcpuReply::State(Box::new(state)))).is_err() {
                        return false;
                    }
                }
                Ok(VcpuRequest::Resume) => {
                    // Tell the guest kernel it was stopped, so its watchdogs do not count the
                    // pause as a lockup (KVM_KVMCLOCK_CTRL; hosts without kvmclock refuse it).
                    let _ = self.fd.kvmclock_ctrl();
                    return !self.stop.load(Ordering::Acquire);
                }
                Ok(VcpuRequest::Finish) | Err(_) => return false,
            }
        }
    }

    /// One `KVM_RUN` and the handling of its exit; `Some` when the vCPU must stop.
    fn run_once(&mut self) -> Option<StopReason> {
        let (pio, mmio) = (&self.pio, &self.mmio);
        let kind = match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => dispatch(pio.read(u64::from(port), data), ExitKind::IoIn),
            Ok(VcpuExit::IoOut(port, data)) => dispatch(pio.write(u64::from(port), data), ExitKind::IoOut),
            Ok(VcpuExit::MmioRead(addr, data)) => dispatch(mmio.read(addr, data), ExitKind::MmioRead),
            Ok(VcpuExit::MmioWrite(addr, data)) => dispatch(mmio.write(addr, data), ExitKind::MmioWrite),
            Ok(VcpuExit::Hlt) => ExitKind::Hlt,
            Ok(VcpuExit::Shutdown) => {
                self.stats.count(ExitKind::Shutdown);
                return Some(StopReason::TripleFault);
            }
            Ok(VcpuExit::SystemEvent(ty, _)) => {
                self.stats.count(ExitKind::SystemEvent);
                return Some(match ty {
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => StopReason::GuestReset,
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => StopReason::GuestPowerOff,
                    other => StopReason::Failed(format!("vCPU {}: unhandled system event {other}", self.id)),
                });
            }
            Ok(VcpuExit::InternalError) => {
                self.stats.count(ExitKind::EmulationFailure);
                return crate::vstate::fixups::handle_internal_error(&mut self.fd, self.id, &mut self.stats);
            }
            Ok(VcpuExit::Intr) => ExitKind::Interrupted,
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return Some(StopReason::Failed(format!(
                    "vCPU {}: KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})",
                    self.id
                )));
            }
            Ok(other) => {
                self.stats.count(ExitKind::Other);
                return Some(StopReason::Failed(format!(
                    "vCPU {}: unexpected KVM exit {other:?}",
                    self.id
                )));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // A kick (stop request or profiler sample) or an AP not yet started by SIPI.
                if self.profile && e.errno() == libc::EINTR {
                    if let Ok(regs) = self.fd.get_regs() {
                        *self.stats.samples.entry(regs.rip).or_default() += 1;
                    }
                }
                ExitKind::Interrupted
            }
            Err(e) => return Some(StopReason::Failed(format!("vCPU {}: KVM_RUN failed: {e}", self.id))),
        };
        self.stats.count(kind);
        None
    }
}

fn dispatch(d: Dispatch, kind: ExitKind) -> ExitKind {
    match d {
        Dispatch::Handled => kind,
        Dispatch::Unmapped => ExitKind::Unmapped,
    }
}

/// Installs the (empty) handler for [`kick_signal`]; its only effect is to interrupt `KVM_RUN`.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    INSTALLED
        .get_or_init(|| vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick).map_err(|e| e.errno()))
        .map_err(|e| VcpuError::Signal(vmm_sys_util::errno::Error::new(e)))
}

/// Logs `what` (at info level: expected events such as fix-ups on PVM hosts) the first time it is
/// seen in this process; guest-triggerable messages must not flood the host's logs.
pub(crate) fn log_once(what: String) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    if seen.len() < 256 && seen.insert(what.clone()) {
        log::info!("{what}");
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    #[test]
    fn lvt_mode_bits_are_replaced() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        regs[APIC_LVT0] = 0x30;
        regs[APIC_LVT0 + 1] = 0x05; // delivery mode 5, vector 0x30
        regs[APIC_LVT0 + 2] = 0x01; // masked
        set_lvt_mode(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(regs[APIC_LVT0] as u8, 0x30);
        assert_eq!(regs[APIC_LVT0 + 1] as u8, 0x07);
        assert_eq!(regs[APIC_LVT0 + 2] as u8, 0x01);
    }
}

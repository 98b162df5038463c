//! A vCPU's architectural state as KVM holds it, saved and restored for snapshots: general and
//! special registers, FPU/XSAVE and XCRs, LAPIC, MSRs, pending events, MP state, debug registers.
//!
//! Saved on the vCPU's own thread while it is paused (see `Vcpu::park`); restored before the
//! thread starts. What a host cannot give (e.g. XSAVE on a PVM host with XSAVE hidden) is
//! recorded as absent and skipped on restore, so the snapshot carries only what was real.

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_bindings::{
    kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events,
    kvm_xcrs, kvm_xsave, Msrs,
};
use kvm_ioctls::{Kvm, VcpuFd};

use crate::arch::cpu_features::{self, CpuidEntry};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    #[error("cannot {what} of vCPU {id}")]
    Ioctl {
        id: u8,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot build the MSR list of vCPU {id}")]
    MsrList { id: u8 },
    #[error("the snapshot's CPUID of vCPU {id} has more entries than KVM takes")]
    CpuidList { id: u8 },
    #[error("the snapshot's guest (vCPU {id}) uses CPU features this host's KVM does not offer: {missing}")]
    CpuFeatures { id: u8, missing: String },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    pub id: u8,
    /// The CPUID the guest saw (given back on restore; checked against the host first).
    pub cpuid: Vec<CpuidEntry>,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub fpu: FpuState,
    pub xsave: Option<Box<kvm_xsave>>,
    pub xcrs: Option<kvm_xcrs>,
    pub lapic: Box<kvm_lapic_state>,
    /// (index, value) of every MSR KVM lets the VMM read on this host.
    pub msrs: Vec<(u32, u64)>,
    pub events: kvm_vcpu_events,
    pub mp_state: kvm_mp_state,
    pub debugregs: Option<kvm_debugregs>,
}

const MSR_IA32_TSC: u32 = 0x10;

/// MSRs KVM reports that a snapshot carries (all of them today; the filter stays as the place
/// to leave one out).
fn msr_saveable(_index: u32) -> bool {
    true
}

/// The order MSRs go back in: the TSC first, because KVM interprets other MSRs against the
/// guest TSC (`IA32_TSC_DEADLINE` is an absolute TSC value). A new VM's TSC starts from zero on
/// hosts that offset it (VMX/SVM); without the saved TSC the restored guest's deadlines would
/// lie as far in the future as its uptime, and its TSC would run backwards. KVM keeps the
/// vCPUs' TSCs in sync when they are written with values this close together.
fn restore_order(msrs: &[(u32, u64)]) -> Vec<(u32, u64)> {
    let mut out = msrs.to_vec();
    out.sort_by_key(|&(index, _)| index != MSR_IA32_TSC);
    out
}

/// Reads every MSR in `indices` that KVM will return; unreadable ones are skipped.
fn read_msrs(fd: &VcpuFd, id: u8, indices: &[u32]) -> Result<Vec<(u32, u64)>, VcpuStateError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest: &[u32] = indices;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(256)];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| VcpuStateError::MsrList { id })?;
        let n = fd.get_msrs(&mut msrs).map_err(|source| VcpuStateError::Ioctl {
            id,
            what: "read the MSRs",
            source,
        })?;
        out.extend(msrs.as_slice()[..n].iter().map(|e| (e.index, e.data)));
        // KVM stops at the first MSR it cannot read: skip that one and go on.
        rest = &rest[(n + 1).min(rest.len())..];
    }
    Ok(out)
}

/// What this host's KVM can save, found once per VM (see [`StateCaps::probe`]).
#[derive(Clone, Debug, Default)]
pub struct StateCaps {
    xsave: bool,
    xcrs: bool,
    /// MSRs to save: KVM_GET_MSR_INDEX_LIST minus those never restored.
    msr_indices: Vec<u32>,
}

impl StateCaps {
    pub fn probe(kvm: &Kvm) -> Self {
        let msr_indices = match kvm.get_msr_index_list() {
            Ok(l) => l.as_slice().iter().copied().filter(|&i| msr_saveable(i)).collect(),
            Err(e) => {
                log::warn!("KVM gives no MSR list ({e}); snapshots will not carry MSRs");
                Vec::new()
            }
        };
        Self {
            xsave: kvm.check_extension(kvm_ioctls::Cap::Xsave),
            xcrs: kvm.check_extension(kvm_ioctls::Cap::Xcrs),
            msr_indices,
        }
    }
}

impl VcpuState {
    /// Reads the state of a vCPU that is not running.
    pub fn save(caps: &StateCaps, fd: &VcpuFd, id: u8) -> Result<Self, VcpuStateError> {
        let io = |what| move |source| VcpuStateError::Ioctl { id, what, source };
        // MP state first: reading it also makes KVM flush pending APIC events into the state.
        let mp_state = fd.get_mp_state().map_err(io("read the MP state"))?;
        let cpuid = cpu_features::entries(&fd.get_cpuid2(KVM_MAX_CPUID_ENTRIES).map_err(io("read the CPUID"))?);
        let regs = fd.get_regs().map_err(io("read the registers"))?;
        let sregs = fd.get_sregs().map_err(io("read the special registers"))?;
        let fpu = FpuState::from(&fd.get_fpu().map_err(io("read the FPU"))?);
        let xsave = if caps.xsave {
            fd.get_xsave().ok().map(Box::new)
        } else {
            None
        };
        let xcrs = if caps.xcrs { fd.get_xcrs().ok() } else { None };
        let lapic = Box::new(fd.get_lapic().map_err(io("read the LAPIC"))?);
        let msrs = read_msrs(fd, id, &caps.msr_indices)?;
        let debugregs = fd.get_debug_regs().ok();
        // Last: reading the MSRs may have changed pending events.
        let events = fd.get_vcpu_events().map_err(io("read the pending events"))?;
        Ok(Self {
            id,
            cpuid,
            regs,
            sregs,
            fpu,
            xsave,
            xcrs,
            lapic,
            msrs,
            events,
            mp_state,
            debugregs,
        })
    }

    /// Loads this state into a freshly created vCPU (its CPUID set up as for a boot on this
    /// host): first the CPUID the guest saw — refused if it has a feature the vCPU's CPUID here
    /// lacks — then the registers.
    ///
    /// The comparison is with what KVM made of the boot CPUID (`KVM_GET_CPUID2`), not with
    /// `KVM_GET_SUPPORTED_CPUID`: on PVM hosts the two differ (the effective CPUID is the host's,
    /// since guest user code runs CPUID natively), and the effective one is what a guest sees.
    pub fn restore(&self, fd: &VcpuFd) -> Result<(), VcpuStateError> {
        let id = self.id;
        let io = |what| move |source| VcpuStateError::Ioctl { id, what, source };
        let here = fd.get_cpuid2(KVM_MAX_CPUID_ENTRIES).map_err(io("read the CPUID"))?;
        let missing = cpu_features::missing(&self.cpuid, &cpu_features::entries(&here));
        if !missing.is_empty() {
            return Err(VcpuStateError::CpuFeatures {
                id,
                missing: missing.join(", "),
            });
        }
        let cpuid = cpu_features::to_kvm(&self.cpuid).ok_or(VcpuStateError::CpuidList { id })?;
        fd.set_cpuid2(&cpuid).map_err(io("set the CPUID"))?;
        fd.set_mp_state(self.mp_state).map_err(io("set the MP state"))?;
        fd.set_sregs(&self.sregs).map_err(io("set the special registers"))?;
        fd.set_regs(&self.regs).map_err(io("set the registers"))?;
        match &self.xsave {
            // SAFETY: the region was read by KVM_GET_XSAVE on a host of the same kind (the
            // snapshot's CPU check ran before), so its size and layout match what KVM expects.
            Some(x) => unsafe { fd.set_xsave(x) }.map_err(io("set the XSAVE area"))?,
            None => fd.set_fpu(&kvm_fpu::from(&self.fpu)).map_err(io("set the FPU"))?,
        }
        if let Some(x) = &self.xcrs {
            fd.set_xcrs(x).map_err(io("set the XCRs"))?;
        }
        fd.set_lapic(&self.lapic).map_err(io("set the LAPIC"))?;
        let entries: Vec<kvm_msr_entry> = restore_order(&self.msrs)
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        for chunk in entries.chunks(256) {
            let msrs = Msrs::from_entries(chunk).map_err(|_| VcpuStateError::MsrList { id })?;
            let n = fd.set_msrs(&msrs).map_err(io("set the MSRs"))?;
            if n != chunk.len() {
                let bad = chunk.get(n).map_or(0, |e| e.index);
                log::warn!("vCPU {id}: KVM refused MSR {bad:#x} on restore; it keeps its reset value");
                // Set the rest one by one so a single refusal does not drop them all.
                for e in chunk.iter().skip(n + 1) {
                    if let Ok(one) = Msrs::from_entries(std::slice::from_ref(e)) {
                        let _ = fd.set_msrs(&one);
                    }
                }
            }
        }
        if let Some(d) = &self.debugregs {
            fd.set_debug_regs(d).map_err(io("set the debug registers"))?;
        }
        fd.set_vcpu_events(&self.events).map_err(io("set the pending events"))?;
        Ok(())
    }
}

/// `kvm_fpu` (x87 + SSE state for hosts without XSAVE), which kvm-bindings does not serialize.
#[derive(Debug, Serialize, Deserialize)]
pub struct FpuState {
    fpr: [[u8; 16]; 8],
    fcw: u16,
    fsw: u16,
    ftwx: u8,
    last_opcode: u16,
    last_ip: u64,
    last_dp: u64,
    xmm: [[u8; 16]; 16],
    mxcsr: u32,
}

impl From<&kvm_fpu> for FpuState {
    fn from(f: &kvm_fpu) -> Self {
        Self {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
        }
    }
}

impl From<&FpuState> for kvm_fpu {
    fn from(f: &FpuState) -> Self {
        Self {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tsc_goes_back_first_and_the_rest_keep_their_order() {
        let saved = [(0x6e0, 5), (0x1b, 1), (MSR_IA32_TSC, 9), (0x3b, 0)];
        assert_eq!(
            restore_order(&saved),
            vec![(MSR_IA32_TSC, 9), (0x6e0, 5), (0x1b, 1), (0x3b, 0)]
        );
    }
}

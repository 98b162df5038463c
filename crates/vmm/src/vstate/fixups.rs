//! Emulation-failure exits: the glue between a vCPU and the `fixup` crate.
//!
//! Some KVM hosts (PVM: guest ring 0 runs in KVM's instruction emulator) return an
//! `KVM_EXIT_INTERNAL_ERROR` / emulation suberror for instructions the emulator lacks, with the
//! instruction bytes attached. Here the exit data is decoded, the vCPU state gathered, the
//! `fixup` crate asked what the instruction does, and its answer applied (registers written back,
//! an exception or software interrupt injected). Anything else stops the VM with the RIP and
//! the instruction bytes in the message.

use fixup::{CpuMode, CpuState, Outcome, Regs};
use kvm_bindings::{kvm_regs, kvm_sregs, Msrs, KVM_INTERNAL_ERROR_EMULATION};
use kvm_ioctls::VcpuFd;

use super::exits::ExitStats;
use super::vcpu::{log_once, StopReason};

const MSR_IA32_TSC: u32 = 0x10;
const MSR_TSC_AUX: u32 = 0xc000_0103;
const X86_EFER_LMA: u64 = 1 << 10;

/// Flag in `emulation_failure.flags`: `insn_size` and `insn_bytes` are valid.
const FLAG_INSTRUCTION_BYTES: u64 = 1;

/// The instruction bytes of an emulation failure, if KVM supplied them.
/// Layout of `run->internal.data` (struct `emulation_failure` in linux/kvm.h): data[0] = flags,
/// then u8 insn_size and u8 insn_bytes[15] packed into data[1..3].
pub fn insn_bytes(suberror: u32, ndata: u32, data: &[u64; 16]) -> Option<Vec<u8>> {
    if suberror != KVM_INTERNAL_ERROR_EMULATION || ndata < 3 || data[0] & FLAG_INSTRUCTION_BYTES == 0 {
        return None;
    }
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&data[1].to_le_bytes());
    raw[8..].copy_from_slice(&data[2].to_le_bytes());
    let size = usize::from(raw[0]).min(15);
    Some(raw[1..1 + size].to_vec())
}

struct KvmCpuState<'a> {
    fd: &'a VcpuFd,
}

impl KvmCpuState<'_> {
    fn msr(&self, index: u32) -> Option<u64> {
        let mut msrs = Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .ok()?;
        match self.fd.get_msrs(&mut msrs) {
            Ok(1) => Some(msrs.as_slice()[0].data),
            _ => None,
        }
    }
}

impl CpuState for KvmCpuState<'_> {
    fn xcr(&mut self, index: u32) -> Option<u64> {
        let xcrs = self.fd.get_xcrs().ok()?;
        let n = usize::try_from(xcrs.nr_xcrs).unwrap_or(0).min(xcrs.xcrs.len());
        xcrs.xcrs[..n].iter().find(|x| x.xcr == index).map(|x| x.value)
    }
    fn tsc_aux(&mut self) -> Option<u64> {
        self.msr(MSR_TSC_AUX)
    }
    fn rdtsc(&mut self) -> u64 {
        self.msr(MSR_IA32_TSC).unwrap_or(0)
    }
}

fn to_fixup(r: &kvm_regs) -> Regs {
    Regs {
        gpr: [
            r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14,
            r.r15,
        ],
        rip: r.rip,
        rflags: r.rflags,
    }
}

fn from_fixup(f: &Regs, r: &mut kvm_regs) {
    let g = f.gpr;
    (r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi) = (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
    (r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15) = (g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
    r.rip = f.rip;
    r.rflags = f.rflags;
}

fn cpu_mode(s: &kvm_sregs) -> CpuMode {
    CpuMode {
        long_mode_64: s.efer & X86_EFER_LMA != 0 && s.cs.l == 1,
        default_32: s.cs.db == 1,
        cpl: s.ss.dpl & 3,
        cr0: s.cr0,
        cr4: s.cr4,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Handles `KVM_EXIT_INTERNAL_ERROR` on vCPU `id`; `Some` when the VM must stop.
pub fn handle_internal_error(fd: &mut VcpuFd, id: u8, stats: &mut ExitStats) -> Option<StopReason> {
    // SAFETY: the caller saw exit_reason == KVM_EXIT_INTERNAL_ERROR, so `internal` is the
    // active member of the kvm_run exit union.
    let internal = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal };
    let fail = |msg: String| Some(StopReason::Failed(format!("vCPU {id}: {msg}")));
    let Some(bytes) = insn_bytes(internal.suberror, internal.ndata, &internal.data) else {
        return fail(format!(
            "KVM internal error, suberror {} (data {:x?})",
            internal.suberror,
            &internal.data[..usize::try_from(internal.ndata).unwrap_or(0).min(16)]
        ));
    };
    let (mut kregs, sregs) = match (fd.get_regs(), fd.get_sregs()) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => return fail(format!("cannot read registers after an emulation failure: {e}")),
    };
    let rip = kregs.rip;
    let mut regs = to_fixup(&kregs);
    let outcome = fixup::fix_up(&bytes, cpu_mode(&sregs), &mut regs, &mut KvmCpuState { fd });
    let kind = match outcome {
        Outcome::Unhandled { mnemonic, reason } => {
            return fail(format!(
                "guest instruction the host cannot emulate at rip {rip:#x}: {mnemonic} ({reason}); bytes fetched at rip: [{}]",
                hex(&bytes)
            ));
        }
        o => o.kind(),
    };
    if let Some(kind) = kind {
        stats.count_fixup(kind.name());
        log_once(format!(
            "completing guest instruction '{}' for the host's emulator (first at rip {rip:#x})",
            kind.name()
        ));
    }
    from_fixup(&regs, &mut kregs);
    if let Err(e) = fd.set_regs(&kregs) {
        return fail(format!("cannot write registers after completing an instruction: {e}"));
    }
    let inject = match outcome {
        Outcome::InjectException { vector, error_code, .. } => Some((vector, error_code, false)),
        Outcome::InjectSoftInterrupt { vector, .. } => Some((vector, None, true)),
        _ => None,
    };
    if let Some((vector, error_code, soft)) = inject {
        let res = fd.get_vcpu_events().and_then(|mut ev| {
            if soft {
                ev.interrupt.injected = 1;
                ev.interrupt.nr = vector;
                ev.interrupt.soft = 1;
            } else {
                ev.exception.injected = 1;
                ev.exception.nr = vector;
                ev.exception.has_error_code = u8::from(error_code.is_some());
                ev.exception.error_code = error_code.unwrap_or(0);
            }
            fd.set_vcpu_events(&ev)
        });
        if let Err(e) = res {
            return fail(format!("cannot inject vector {vector} at rip {rip:#x}: {e}"));
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    #[test]
    fn decodes_instruction_bytes_from_exit_data() {
        let mut data = [0u64; 16];
        data[0] = 1;
        // insn_size = 3, bytes f3 0f b8 (then the 0x90 padding KVM fills in).
        let mut raw = [0x90u8; 16];
        raw[0] = 3;
        raw[1..4].copy_from_slice(&[0xf3, 0x0f, 0xb8]);
        data[1] = u64::from_le_bytes(raw[..8].try_into().unwrap());
        data[2] = u64::from_le_bytes(raw[8..].try_into().unwrap());
        assert_eq!(
            insn_bytes(KVM_INTERNAL_ERROR_EMULATION, 8, &data),
            Some(vec![0xf3, 0x0f, 0xb8])
        );
        assert_eq!(insn_bytes(KVM_INTERNAL_ERROR_EMULATION, 1, &data), None);
        assert_eq!(insn_bytes(2, 8, &data), None);
        data[0] = 0;
        assert_eq!(insn_bytes(KVM_INTERNAL_ERROR_EMULATION, 8, &data), None);
        // An oversized length from a buggy host is clamped to 15 bytes.
        data[0] = 1;
        data[1] |= 0xff;
        assert_eq!(insn_bytes(KVM_INTERNAL_ERROR_EMULATION, 8, &data).unwrap().len(), 15);
    }

    #[test]
    fn register_round_trip() {
        let k = kvm_regs {
            rax: 1,
            rcx: 2,
            r15: 16,
            rip: 0x1000,
            rflags: 2,
            ..Default::default()
        };
        let f = to_fixup(&k);
        assert_eq!(f.gpr[Regs::RCX], 2);
        assert_eq!(f.gpr[15], 16);
        let mut back = kvm_regs::default();
        from_fixup(&f, &mut back);
        assert_eq!(back.rax, 1);
        assert_eq!(back.r15, 16);
        assert_eq!(back.rip, 0x1000);
    }
}

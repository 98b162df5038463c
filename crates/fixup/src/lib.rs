//! Completes guest instructions that the host's KVM instruction emulator gave up on.
//!
//! On PVM hosts guest ring 0 runs under KVM's x86 emulator, and a handful of instructions
//! (int3, `int n`, fwait, popcnt, clac/stac, xgetbv, rdtscp, crc32, …) come back to the VMM as
//! `KVM_EXIT_INTERNAL_ERROR` / `KVM_INTERNAL_ERROR_EMULATION` with the instruction bytes
//! (see `/work/shared/PVM-HOST.md`). This crate is the one place that decides what to do with
//! such an instruction. It is pure logic: it owns decoding and the architectural semantics
//! (Intel SDM vol. 2), and does **not** own ioctls, logging, counters or guest memory — the
//! vCPU loop reads registers, calls [`fix_up`], and applies the [`Outcome`]:
//!
//! | Outcome | What the vCPU loop does |
//! |---|---|
//! | [`Outcome::Completed`] | write `regs` back (KVM_SET_REGS) and resume |
//! | [`Outcome::InjectException`] | write `regs`, inject the exception (KVM_SET_VCPU_EVENTS) |
//! | [`Outcome::InjectSoftInterrupt`] | write `regs`, inject a soft interrupt |
//! | [`Outcome::Unhandled`] | stop the VM, printing RIP, the bytes, mnemonic and reason |
//!
//! ```
//! use fixup::{fix_up, CpuMode, CpuState, Kind, Outcome, Regs};
//! struct NoState;
//! impl CpuState for NoState {
//!     fn xcr(&mut self, _index: u32) -> Option<u64> { None }
//!     fn tsc_aux(&mut self) -> Option<u64> { None }
//!     fn rdtsc(&mut self) -> u64 { 0 }
//! }
//! let mode = CpuMode { long_mode_64: true, default_32: false, cpl: 0, cr0: 0x8000_0031, cr4: 0 };
//! let mut regs = Regs { rip: 0x1000, ..Regs::default() };
//! regs.gpr[Regs::RCX] = 0xff;
//! // popcnt rax, rcx
//! let out = fix_up(&[0xf3, 0x48, 0x0f, 0xb8, 0xc1], mode, &mut regs, &mut NoState);
//! assert_eq!(out, Outcome::Completed(Kind::Popcnt));
//! assert_eq!((regs.gpr[Regs::RAX], regs.rip), (8, 0x1005));
//! ```
//!
//! The decoder is hand-written because it must recognise exactly the instructions handled
//! here and nothing more; a general x86 decoder crate would be far larger than the need.
//! Nothing a guest sends can make it panic: malformed, truncated or unknown bytes become
//! [`Outcome::Unhandled`], and an `Unhandled` outcome never modifies `regs`.

mod alu;
mod decode;
mod exec;
mod kind;
mod names;
#[cfg(test)]
mod tests;

pub use kind::Kind;

/// The guest's general-purpose registers, instruction pointer and flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// rax rcx rdx rbx rsp rbp rsi rdi r8..r15, in x86 encoding order (see the index consts).
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
}

impl Regs {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
    pub const R8: usize = 8;
}

/// The parts of the guest's mode that decoding and privilege checks depend on (from sregs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuMode {
    /// 64-bit mode: CS.L with EFER.LMA set.
    pub long_mode_64: bool,
    /// CS.D (default operand and address size 32); ignored in 64-bit mode.
    pub default_32: bool,
    /// Current privilege level (CS.RPL / SS.DPL).
    pub cpl: u8,
    /// CR0: PE gates clac/stac; MP and TS make fwait raise #NM.
    pub cr0: u64,
    /// CR4: OSXSAVE gates xgetbv; TSD makes rdtscp at CPL > 0 raise #GP.
    pub cr4: u64,
}

/// State the fix-up may need beyond GPRs; the vCPU loop implements it with KVM ioctls.
/// Each method is called only by the instruction that needs it.
pub trait CpuState {
    /// XCR `index` (KVM_GET_XCRS), or `None` if the guest may not read it (the guest gets #GP(0)).
    fn xcr(&mut self, index: u32) -> Option<u64>;
    /// IA32_TSC_AUX (KVM_GET_MSRS), or `None` if it could not be read (the VM stops).
    fn tsc_aux(&mut self) -> Option<u64>;
    /// The guest's current time-stamp counter (IA32_TSC as the guest sees it).
    fn rdtsc(&mut self) -> u64;
}

/// What the vCPU loop must do after [`fix_up`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Registers (including rip) were updated in place; resume the guest.
    Completed(Kind),
    /// Inject a hardware exception. `regs` already hold what the guest's handler must see:
    /// for traps (#BP 3, #OF 4) rip is past the instruction; for faults (#UD 6, #NM 7,
    /// #GP 13) rip is unchanged so the handler sees the faulting instruction.
    InjectException {
        kind: Kind,
        vector: u8,
        error_code: Option<u32>,
    },
    /// `int n`: rip was already advanced past the instruction; inject a software interrupt
    /// with this vector (KVM rejects exception injection of vectors above 31) and length.
    InjectSoftInterrupt { kind: Kind, vector: u8, insn_len: u8 },
    /// Cannot complete: the VM must stop. `regs` are untouched. `mnemonic` is a best-effort
    /// name of the instruction (e.g. "xsave"); `reason` says why it is not completed.
    Unhandled {
        mnemonic: &'static str,
        reason: &'static str,
    },
}

impl Outcome {
    /// The instruction kind the outcome is about, for per-kind counters; `None` if unhandled.
    pub fn kind(&self) -> Option<Kind> {
        match *self {
            Outcome::Completed(kind)
            | Outcome::InjectException { kind, .. }
            | Outcome::InjectSoftInterrupt { kind, .. } => Some(kind),
            Outcome::Unhandled { .. } => None,
        }
    }
}

/// Decodes the instruction at the start of `bytes` (the bytes KVM reported, fetched at
/// `regs.rip`; they may run past the instruction, and only the first 15 are considered) and
/// completes it against `regs` and `cpu`. The instruction's length comes from decoding, not
/// from how many bytes KVM supplied.
pub fn fix_up(bytes: &[u8], mode: CpuMode, regs: &mut Regs, cpu: &mut dyn CpuState) -> Outcome {
    let insn = match decode::decode(bytes, mode) {
        Ok(insn) => insn,
        Err(names::Unrecognised { mnemonic, reason }) => return Outcome::Unhandled { mnemonic, reason },
    };
    // Work on a copy so that no path can leave half-written registers behind an Unhandled.
    let mut next = *regs;
    let outcome = exec::execute(&insn, mode, &mut next, cpu);
    if !matches!(outcome, Outcome::Unhandled { .. }) {
        *regs = next;
    }
    outcome
}

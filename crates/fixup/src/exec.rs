//! Architectural semantics of the decoded instructions (Intel SDM vol. 2, per instruction).
//!
//! Owns the exception checks each instruction makes (LOCK → #UD, CPL, CR0/CR4 bits), the
//! register and flag results, and the rip advance. Works on a scratch copy of the registers:
//! [`crate::fix_up`] commits them only if the outcome is not `Unhandled`.

use crate::alu::{self, AC, CF, OF, STATUS, VM, ZF};
use crate::decode::{Insn, Op, Operand, Size};
use crate::names::MEMORY;
use crate::{CpuMode, CpuState, Kind, Outcome, Regs};

const OF_VECTOR: u8 = 4;
const BP_VECTOR: u8 = 3;
const UD_VECTOR: u8 = 6;
const NM_VECTOR: u8 = 7;
const GP_VECTOR: u8 = 13;

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_TS: u64 = 1 << 3;
const CR4_TSD: u64 = 1 << 2;
const CR4_OSXSAVE: u64 = 1 << 18;

/// Completes `insn` against `regs` (a scratch copy).
pub(crate) fn execute(insn: &Insn, mode: CpuMode, regs: &mut Regs, cpu: &mut dyn CpuState) -> Outcome {
    let kind = insn.op.kind();
    if regs.rflags & VM != 0 {
        // A 64-bit guest cannot be in virtual-8086 mode; its IOPL rules are not modelled.
        return unhandled(kind, "virtual-8086 mode is not supported by the fix-up");
    }
    if insn.lock {
        // None of these instructions is lockable (SDM vol. 2 §2.1.1 LOCK).
        return fault(kind, UD_VECTOR, None);
    }
    match insn.op {
        Op::Int3 => {
            advance(regs, mode, insn.len);
            trap(kind, BP_VECTOR)
        }
        Op::IntN(vector) => {
            advance(regs, mode, insn.len);
            Outcome::InjectSoftInterrupt {
                kind,
                vector,
                insn_len: insn.len,
            }
        }
        Op::Into => into(kind, insn.len, mode, regs),
        Op::Fwait => fwait(kind, insn.len, mode, regs),
        Op::Clac | Op::Stac => smap(insn, mode, regs),
        Op::Xgetbv => xgetbv(kind, insn.len, mode, regs, cpu),
        Op::Rdtscp => rdtscp(kind, insn.len, mode, regs, cpu),
        Op::BitCount { kind, size, dst, src } => bit_count(insn, kind, size, dst, src, mode, regs),
        Op::Crc32 {
            dst_size,
            src_size,
            dst,
            src,
        } => {
            let Operand::Reg(src) = src else {
                return unhandled(kind, MEMORY);
            };
            let data = alu::read_gpr(regs, src, src_size, insn.rex);
            let crc = alu::crc32c(alu::read_gpr(regs, dst, Size::B32, insn.rex), data, src_size);
            // The result is 32 bits; a 64-bit destination gets zeros above (SDM CRC32).
            alu::write_gpr(regs, dst, dst_size, crc);
            advance(regs, mode, insn.len);
            Outcome::Completed(kind)
        }
    }
}

/// Moves rip past the instruction, wrapping at the width of the instruction pointer.
fn advance(regs: &mut Regs, mode: CpuMode, len: u8) {
    let rip = regs.rip.wrapping_add(u64::from(len));
    regs.rip = if mode.long_mode_64 {
        rip
    } else if mode.default_32 {
        rip & 0xffff_ffff
    } else {
        rip & 0xffff
    };
}

fn unhandled(kind: Kind, reason: &'static str) -> Outcome {
    Outcome::Unhandled {
        mnemonic: kind.name(),
        reason,
    }
}

/// A fault: rip stays on the instruction.
fn fault(kind: Kind, vector: u8, error_code: Option<u32>) -> Outcome {
    Outcome::InjectException {
        kind,
        vector,
        error_code,
    }
}

/// A trap: the caller has already advanced rip.
fn trap(kind: Kind, vector: u8) -> Outcome {
    Outcome::InjectException {
        kind,
        vector,
        error_code: None,
    }
}

fn low32(value: u64) -> u32 {
    u32::try_from(value & 0xffff_ffff).unwrap_or(u32::MAX)
}

/// into: #UD in 64-bit mode; otherwise #OF (a trap) if OF is set.
fn into(kind: Kind, len: u8, mode: CpuMode, regs: &mut Regs) -> Outcome {
    if mode.long_mode_64 {
        return fault(kind, UD_VECTOR, None);
    }
    advance(regs, mode, len);
    if regs.rflags & OF != 0 {
        trap(kind, OF_VECTOR)
    } else {
        Outcome::Completed(kind)
    }
}

/// fwait: #NM if CR0.MP and CR0.TS are both set. Otherwise it would deliver a pending
/// unmasked x87 exception (#MF); the fix-up assumes there is none and completes it. Guests
/// run with x87 exceptions masked (Linux's default control word 0x37f), and Linux's one
/// kernel fwait (fpu__drop on task exit) has an exception-table fixup that merely skips the
/// instruction, so completing it is what the guest would have ended up doing anyway.
fn fwait(kind: Kind, len: u8, mode: CpuMode, regs: &mut Regs) -> Outcome {
    if mode.cr0 & (CR0_MP | CR0_TS) == CR0_MP | CR0_TS {
        return fault(kind, NM_VECTOR, None);
    }
    advance(regs, mode, len);
    Outcome::Completed(kind)
}

/// clac / stac: #UD outside protected mode or at CPL > 0; otherwise clear / set RFLAGS.AC.
fn smap(insn: &Insn, mode: CpuMode, regs: &mut Regs) -> Outcome {
    let kind = insn.op.kind();
    if mode.cr0 & CR0_PE == 0 || mode.cpl > 0 {
        return fault(kind, UD_VECTOR, None);
    }
    if insn.op == Op::Stac {
        regs.rflags |= AC;
    } else {
        regs.rflags &= !AC;
    }
    advance(regs, mode, insn.len);
    Outcome::Completed(kind)
}

/// xgetbv: #UD unless CR4.OSXSAVE; EDX:EAX = XCR[ECX], #GP(0) for an XCR that cannot be read.
fn xgetbv(kind: Kind, len: u8, mode: CpuMode, regs: &mut Regs, cpu: &mut dyn CpuState) -> Outcome {
    if mode.cr4 & CR4_OSXSAVE == 0 {
        return fault(kind, UD_VECTOR, None);
    }
    let Some(value) = cpu.xcr(low32(regs.gpr[Regs::RCX])) else {
        return fault(kind, GP_VECTOR, Some(0));
    };
    write_edx_eax(regs, value);
    advance(regs, mode, len);
    Outcome::Completed(kind)
}

/// rdtscp: #GP(0) if CR4.TSD at CPL > 0; EDX:EAX = TSC, ECX = TSC_AUX[31:0].
fn rdtscp(kind: Kind, len: u8, mode: CpuMode, regs: &mut Regs, cpu: &mut dyn CpuState) -> Outcome {
    if mode.cr4 & CR4_TSD != 0 && mode.cpl > 0 && mode.cr0 & CR0_PE != 0 {
        return fault(kind, GP_VECTOR, Some(0));
    }
    let Some(aux) = cpu.tsc_aux() else {
        return unhandled(kind, "IA32_TSC_AUX could not be read");
    };
    write_edx_eax(regs, cpu.rdtsc());
    alu::write_gpr(regs, 1, Size::B32, aux);
    advance(regs, mode, len);
    Outcome::Completed(kind)
}

/// EDX:EAX = value; the upper halves of RAX and RDX are cleared.
fn write_edx_eax(regs: &mut Regs, value: u64) {
    alu::write_gpr(regs, 0, Size::B32, value);
    alu::write_gpr(regs, 2, Size::B32, value >> 32);
}

/// popcnt / lzcnt / tzcnt, register forms. Flags per SDM: popcnt sets ZF = (src == 0) and
/// clears the others; lzcnt/tzcnt set CF = (src == 0) and ZF = (result == 0), and the flags
/// the SDM leaves undefined are cleared.
fn bit_count(insn: &Insn, kind: Kind, size: Size, dst: u8, src: Operand, mode: CpuMode, regs: &mut Regs) -> Outcome {
    let Operand::Reg(src) = src else {
        return unhandled(kind, MEMORY);
    };
    let value = alu::read_gpr(regs, src, size, insn.rex);
    let (result, flags) = match kind {
        Kind::Popcnt => (alu::popcnt(value, size), if value == 0 { ZF } else { 0 }),
        _ => {
            let result = if kind == Kind::Lzcnt {
                alu::lzcnt(value, size)
            } else {
                alu::tzcnt(value, size)
            };
            let cf = if value == 0 { CF } else { 0 };
            let zf = if result == 0 { ZF } else { 0 };
            (result, cf | zf)
        }
    };
    alu::write_gpr(regs, dst, size, result);
    regs.rflags = (regs.rflags & !STATUS) | flags;
    advance(regs, mode, insn.len);
    Outcome::Completed(kind)
}

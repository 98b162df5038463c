//! Best-effort names and reasons for instructions the fix-up does not complete.
//!
//! Owns the tables that turn an unrecognised opcode into a message the VMM can print when
//! it stops the VM ("xrstor: needs guest memory access and the guest's extended state").
//! Naming is best effort and never decides behaviour: every path here means "stop the VM".

use crate::decode::{Cursor, Prefixes};
use crate::CpuMode;

/// An instruction the fix-up does not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unrecognised {
    pub mnemonic: &'static str,
    pub reason: &'static str,
}

const fn unrec(mnemonic: &'static str, reason: &'static str) -> Unrecognised {
    Unrecognised { mnemonic, reason }
}

pub(crate) const EMPTY: Unrecognised = unrec("unknown", "no instruction bytes were supplied");
pub(crate) const TRUNCATED: Unrecognised = unrec("unknown", "the instruction bytes end before the instruction does");
pub(crate) const TOO_LONG: Unrecognised = unrec(
    "unknown",
    "instruction is longer than 15 bytes (the CPU would raise #GP)",
);

pub(crate) const MEMORY: &str =
    "memory operands need guest page-table walks and guest memory access, which the fix-up does not do";
const UNKNOWN: &str = "instruction is not one the fix-up completes";
const PREFIX: &str = "this prefix combination is not one the fix-up completes";
const XSTATE: &str = "needs guest memory access and the guest's extended (XSAVE) state";
const XSETBV: &str = "writing XCRs needs KVM_SET_XCRS; the fix-up does not complete it";
const HYPERCALL: &str = "hypercalls are not available to this guest (on PVM hosts they hang the vCPU)";
const VMX_SVM: &str = "virtualization instructions are not available to this guest";
const CMPXCHG: &str = "needs an atomic guest memory access";
const SSE: &str = "SSE instructions need the guest's vector registers, which the fix-up does not model";
const AVX: &str = "AVX (VEX/EVEX/XOP) instructions need the guest's vector registers, which the fix-up does not model";
const X87: &str = "x87 instructions need the guest's FPU state, which the fix-up does not model";
const INT1: &str = "int1 (icebp) has debug-exception semantics the fix-up does not model";

/// Both F2 and F3 on an instruction that needs exactly one of them.
pub(crate) fn conflicting_rep(mnemonic: &'static str) -> Unrecognised {
    unrec(mnemonic, "both F2 and F3 prefixes are present")
}

/// Opcodes of the one-byte map other than those the decoder handles.
pub(crate) fn one_byte(op: u8, cur: &mut Cursor, mode: CpuMode) -> Unrecognised {
    match op {
        0xf1 => unrec("int1", INT1),
        0xd8..=0xdf => unrec("x87", X87),
        0x40..=0x47 => unrec("inc", UNKNOWN),
        0x48..=0x4f => unrec("dec", UNKNOWN),
        0xc4 | 0xc5 | 0x62 | 0x8f => {
            // Outside 64-bit mode these are les/lds/bound/pop unless ModRM.mod = 11.
            let vex = mode.long_mode_64 || cur.next().map_or(true, |m| m >> 6 == 3);
            match (op, vex) {
                (0xc4 | 0xc5, true) => unrec("vex", AVX),
                (0x62, true) => unrec("evex", AVX),
                (0x8f, true) => unrec("xop", AVX),
                (0xc4, false) => unrec("les", UNKNOWN),
                (0xc5, false) => unrec("lds", UNKNOWN),
                (0x62, false) => unrec("bound", UNKNOWN),
                _ => unrec("pop", UNKNOWN),
            }
        }
        _ => unrec("unknown", UNKNOWN),
    }
}

/// 0F xx opcodes other than those the decoder handles.
pub(crate) fn two_byte(op: u8, p: &Prefixes) -> Unrecognised {
    let sse = |name| unrec(name, SSE);
    match op {
        0xb8 => unrec("jmpe", UNKNOWN),
        0xbc => unrec("bsf", UNKNOWN),
        0xbd => unrec("bsr", UNKNOWN),
        0x3a => unrec("sse4", SSE),
        0x0f => unrec("3dnow", SSE),
        0x10 | 0x11 => sse("movups"),
        0x28 | 0x29 => sse("movaps"),
        0x57 => sse("xorps"),
        0x6e | 0x7e if p.w() || p.f3 => sse("movq"),
        0x6e | 0x7e => sse("movd"),
        0x6f | 0x7f if p.f3 => sse("movdqu"),
        0x6f | 0x7f if p.opsize => sse("movdqa"),
        0x6f | 0x7f => sse("movq"),
        0xd6 => sse("movq"),
        0xef => sse("pxor"),
        0x10..=0x17 | 0x28..=0x2f | 0x50..=0x7f | 0xc2..=0xc6 | 0xd0..=0xff => sse("sse"),
        _ => unrec("unknown", UNKNOWN),
    }
}

/// 0F 38 xx opcodes other than crc32.
pub(crate) fn map_0f38(op: u8, p: &Prefixes) -> Unrecognised {
    match op {
        0xf0 | 0xf1 if !p.f2 && !p.f3 => unrec("movbe", MEMORY),
        0xf0 | 0xf1 => unrec("unknown", PREFIX),
        0x00..=0x4f | 0xc8..=0xdf => unrec("sse", SSE),
        _ => unrec("unknown", UNKNOWN),
    }
}

/// 0F 01 /r (group 7) other than clac, stac, xgetbv and rdtscp without prefixes.
pub(crate) fn group7(m: u8, p: &Prefixes) -> Unrecognised {
    if m >> 6 != 3 {
        return match (m >> 3) & 7 {
            0 => unrec("sgdt", MEMORY),
            1 => unrec("sidt", MEMORY),
            2 => unrec("lgdt", MEMORY),
            3 => unrec("lidt", MEMORY),
            4 => unrec("smsw", MEMORY),
            6 => unrec("lmsw", MEMORY),
            7 => unrec("invlpg", MEMORY),
            _ => unrec("rstorssp", MEMORY),
        };
    }
    match m {
        0xca if p.f3 => unrec("eretu", UNKNOWN),
        0xca if p.f2 => unrec("erets", UNKNOWN),
        0xca | 0xcb | 0xd0 | 0xf9 => unrec(group7_base(m), PREFIX),
        0xc1 => unrec("vmcall", HYPERCALL),
        0xd9 => unrec("vmmcall", HYPERCALL),
        0xc2 => unrec("vmlaunch", VMX_SVM),
        0xc3 => unrec("vmresume", VMX_SVM),
        0xc4 => unrec("vmxoff", VMX_SVM),
        0xd4 => unrec("vmfunc", VMX_SVM),
        0xd8 => unrec("vmrun", VMX_SVM),
        0xda => unrec("vmload", VMX_SVM),
        0xdb => unrec("vmsave", VMX_SVM),
        0xdc => unrec("stgi", VMX_SVM),
        0xdd => unrec("clgi", VMX_SVM),
        0xde => unrec("skinit", VMX_SVM),
        0xdf => unrec("invlpga", VMX_SVM),
        0xd1 => unrec("xsetbv", XSETBV),
        0xc8 => unrec("monitor", UNKNOWN),
        0xc9 => unrec("mwait", UNKNOWN),
        0xd5 => unrec("xend", UNKNOWN),
        0xd6 => unrec("xtest", UNKNOWN),
        0xe8 => unrec("serialize", UNKNOWN),
        0xee => unrec("rdpkru", UNKNOWN),
        0xef => unrec("wrpkru", UNKNOWN),
        0xe0..=0xe7 => unrec("smsw", UNKNOWN),
        0xf0..=0xf7 => unrec("lmsw", UNKNOWN),
        0xf8 => unrec("swapgs", UNKNOWN),
        0xfa => unrec("monitorx", UNKNOWN),
        0xfb => unrec("mwaitx", UNKNOWN),
        0xfc => unrec("clzero", UNKNOWN),
        0xfd => unrec("rdpru", UNKNOWN),
        _ => unrec("unknown", UNKNOWN),
    }
}

fn group7_base(m: u8) -> &'static str {
    match m {
        0xca => "clac",
        0xcb => "stac",
        0xd0 => "xgetbv",
        _ => "rdtscp",
    }
}

/// 0F AE (group 15) and 0F C7 (group 9): the xsave family, fences, cmpxchg8b/16b, rdrand.
pub(crate) fn group(op: u8, m: u8, p: &Prefixes) -> Unrecognised {
    let reg = (m >> 3) & 7;
    let w = p.w();
    let pick = |plain, wide| if w { wide } else { plain };
    match (op, m >> 6 == 3, reg) {
        (0xae, false, 0) => unrec(pick("fxsave", "fxsave64"), XSTATE),
        (0xae, false, 1) => unrec(pick("fxrstor", "fxrstor64"), XSTATE),
        (0xae, false, 2) => unrec("ldmxcsr", MEMORY),
        (0xae, false, 3) => unrec("stmxcsr", MEMORY),
        (0xae, false, 4) => unrec(pick("xsave", "xsave64"), XSTATE),
        (0xae, false, 5) => unrec(pick("xrstor", "xrstor64"), XSTATE),
        (0xae, false, 6) if p.opsize => unrec("clwb", MEMORY),
        (0xae, false, 6) => unrec(pick("xsaveopt", "xsaveopt64"), XSTATE),
        (0xae, false, _) => unrec("clflush", MEMORY),
        (0xae, true, 0..=3) => unrec("rdfsbase/wrfsbase", UNKNOWN),
        (0xae, true, 5) => unrec("lfence", UNKNOWN),
        (0xae, true, 6) => unrec("mfence", UNKNOWN),
        (0xae, true, 7) => unrec("sfence", UNKNOWN),
        (0xc7, false, 1) => unrec(pick("cmpxchg8b", "cmpxchg16b"), CMPXCHG),
        (0xc7, false, 3) => unrec(pick("xrstors", "xrstors64"), XSTATE),
        (0xc7, false, 4) => unrec(pick("xsavec", "xsavec64"), XSTATE),
        (0xc7, false, 5) => unrec(pick("xsaves", "xsaves64"), XSTATE),
        (0xc7, false, 6 | 7) => unrec("vmptrld/vmclear/vmxon/vmptrst", VMX_SVM),
        (0xc7, true, 6) => unrec("rdrand", UNKNOWN),
        (0xc7, true, 7) if p.f3 => unrec("rdpid", UNKNOWN),
        (0xc7, true, 7) => unrec("rdseed", UNKNOWN),
        _ => unrec("unknown", UNKNOWN),
    }
}

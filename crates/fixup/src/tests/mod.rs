//! Unit tests of [`crate::fix_up`] as the vCPU loop sees it: bytes, mode and registers in,
//! outcome and registers out. Helpers here; one module per instruction family.

mod bitcount;
mod control;
mod crc32;
mod fuzz;
mod unhandled;

use crate::{fix_up, CpuMode, CpuState, Outcome, Regs};

pub(super) const CR0_PE: u64 = 1 << 0;
pub(super) const CR0_MP: u64 = 1 << 1;
pub(super) const CR0_TS: u64 = 1 << 3;
pub(super) const CR0_PG: u64 = 1 << 31;
pub(super) const CR4_TSD: u64 = 1 << 2;
pub(super) const CR4_OSXSAVE: u64 = 1 << 18;

/// A guest's XCRs, TSC and TSC_AUX, counting how often each is read.
#[derive(Debug)]
pub(super) struct MockCpu {
    pub xcr0: u64,
    pub tsc: u64,
    pub tsc_aux: Option<u64>,
    pub reads: usize,
}

impl Default for MockCpu {
    fn default() -> Self {
        MockCpu {
            xcr0: 0x2e7,
            tsc: 0x1122_3344_5566_7788,
            tsc_aux: Some(0xaaaa_bbbb_0000_0003),
            reads: 0,
        }
    }
}

impl CpuState for MockCpu {
    fn xcr(&mut self, index: u32) -> Option<u64> {
        self.reads += 1;
        match index {
            0 => Some(self.xcr0),
            1 => Some(0x2),
            _ => None,
        }
    }

    fn tsc_aux(&mut self) -> Option<u64> {
        self.reads += 1;
        self.tsc_aux
    }

    fn rdtsc(&mut self) -> u64 {
        self.reads += 1;
        self.tsc
    }
}

/// 64-bit kernel mode, as a Linux guest runs.
pub(super) fn long64() -> CpuMode {
    CpuMode {
        long_mode_64: true,
        default_32: false,
        cpl: 0,
        cr0: CR0_PE | CR0_MP | CR0_PG | (1 << 5),
        cr4: CR4_OSXSAVE | (1 << 5),
    }
}

/// 32-bit protected mode (CS.D = 1).
pub(super) fn prot32() -> CpuMode {
    CpuMode {
        long_mode_64: false,
        default_32: true,
        ..long64()
    }
}

/// 16-bit code (CS.D = 0, not 64-bit mode).
pub(super) fn code16() -> CpuMode {
    CpuMode {
        long_mode_64: false,
        default_32: false,
        ..long64()
    }
}

/// Registers with a distinct, recognisable value in every GPR.
pub(super) fn regs() -> Regs {
    let mut gpr = [0; 16];
    for (i, r) in (0u64..).zip(gpr.iter_mut()) {
        *r = 0xdead_beef_0000_0000 | (i << 24) | 0x00a0_b0c0 | i;
    }
    Regs {
        gpr,
        rip: 0xffff_ffff_8100_0000,
        rflags: 0x2,
    }
}

/// Runs the fix-up with a default [`MockCpu`].
pub(super) fn run(bytes: &[u8], mode: CpuMode, regs: &mut Regs) -> Outcome {
    fix_up(bytes, mode, regs, &mut MockCpu::default())
}

/// Runs `bytes` on `before`, asserts it completed as `kind` and advanced rip by `len`,
/// and returns the resulting registers.
pub(super) fn completed(bytes: &[u8], mode: CpuMode, before: Regs, kind: crate::Kind, len: u64) -> Regs {
    let mut after = before;
    assert_eq!(run(bytes, mode, &mut after), Outcome::Completed(kind), "{bytes:02x?}");
    let ip_mask = match (mode.long_mode_64, mode.default_32) {
        (true, _) => u64::MAX,
        (false, true) => 0xffff_ffff,
        (false, false) => 0xffff,
    };
    assert_eq!(
        after.rip,
        before.rip.wrapping_add(len) & ip_mask,
        "rip after {bytes:02x?}"
    );
    after
}

/// Asserts `bytes` is unhandled with `mnemonic` and that registers were not touched.
pub(super) fn unhandled(bytes: &[u8], mode: CpuMode, mnemonic: &str) -> &'static str {
    let before = regs();
    let mut after = before;
    match run(bytes, mode, &mut after) {
        Outcome::Unhandled { mnemonic: m, reason } => {
            assert_eq!(m, mnemonic, "{bytes:02x?}: {reason}");
            assert_eq!(after, before);
            assert!(!reason.is_empty());
            reason
        }
        other => panic!("{bytes:02x?}: expected unhandled {mnemonic}, got {other:?}"),
    }
}

/// Asserts `bytes` faults with `vector`/`error_code` and that registers (rip too) are unchanged.
pub(super) fn faults(bytes: &[u8], mode: CpuMode, vector: u8, error_code: Option<u32>) {
    let before = regs();
    let mut after = before;
    match run(bytes, mode, &mut after) {
        Outcome::InjectException {
            vector: v,
            error_code: e,
            ..
        } => {
            assert_eq!((v, e), (vector, error_code), "{bytes:02x?}");
            assert_eq!(after, before, "a fault must leave rip on the instruction");
        }
        other => panic!("{bytes:02x?}: expected fault {vector}, got {other:?}"),
    }
}

//! int3, int n, into, fwait, clac/stac, xgetbv, rdtscp: exceptions, rip, prefixes.

use super::*;
use crate::{Kind, Outcome, Regs};

#[test]
fn int3_advances_and_injects_bp() {
    let mut r = regs();
    let before = r;
    let out = run(&[0xcc, 0x90, 0x90], long64(), &mut r);
    assert_eq!(
        out,
        Outcome::InjectException {
            kind: Kind::Int3,
            vector: 3,
            error_code: None
        }
    );
    assert_eq!(r.rip, before.rip + 1);
    assert_eq!(r.gpr, before.gpr);
    assert_eq!(out.kind(), Some(Kind::Int3));
}

#[test]
fn int3_with_ignored_prefixes_counts_them_in_length() {
    let mut r = regs();
    let before = r;
    // ds, operand size and a REX: all meaningless on int3, but part of the instruction.
    let out = run(&[0x3e, 0x66, 0x48, 0xcc], long64(), &mut r);
    assert!(matches!(out, Outcome::InjectException { vector: 3, .. }));
    assert_eq!(r.rip, before.rip + 4);
}

#[test]
fn int3_rip_wraps_at_eip_and_ip() {
    let mut r = Regs {
        rip: 0xffff_ffff,
        ..regs()
    };
    run(&[0xcc], prot32(), &mut r);
    assert_eq!(r.rip, 0);
    let mut r = Regs { rip: 0xffff, ..regs() };
    run(&[0xcc], code16(), &mut r);
    assert_eq!(r.rip, 0);
    let mut r = Regs {
        rip: u64::MAX,
        ..regs()
    };
    run(&[0xcc], long64(), &mut r);
    assert_eq!(r.rip, 0);
}

#[test]
fn int_n_is_a_soft_interrupt() {
    for vector in [0x80u8, 0x03, 0x20, 0xff, 0x00] {
        let mut r = regs();
        let before = r;
        let out = run(&[0xcd, vector, 0xcc], long64(), &mut r);
        assert_eq!(
            out,
            Outcome::InjectSoftInterrupt {
                kind: Kind::IntN,
                vector,
                insn_len: 2
            }
        );
        assert_eq!(r.rip, before.rip + 2);
    }
    let mut r = regs();
    let out = run(&[0x2e, 0xcd, 0x80], prot32(), &mut r);
    assert!(matches!(
        out,
        Outcome::InjectSoftInterrupt {
            vector: 0x80,
            insn_len: 3,
            ..
        }
    ));
}

#[test]
fn into_traps_only_on_overflow_and_not_in_64_bit_mode() {
    faults(&[0xce], long64(), 6, None);
    let mut r = Regs {
        rflags: 0x2 | (1 << 11),
        ..regs()
    };
    let before = r;
    let out = run(&[0xce], prot32(), &mut r);
    assert_eq!(
        out,
        Outcome::InjectException {
            kind: Kind::Into,
            vector: 4,
            error_code: None
        }
    );
    assert_eq!(r.rip, (before.rip + 1) & 0xffff_ffff);
    let r = Regs { rip: 0x1000, ..regs() };
    completed(&[0xce], prot32(), r, Kind::Into, 1);
}

#[test]
fn fwait_completes_unless_mp_and_ts() {
    let after = completed(&[0x9b, 0xdb, 0xe3], long64(), regs(), Kind::Fwait, 1);
    assert_eq!(after.gpr, regs().gpr);
    let mut mode = long64();
    mode.cr0 |= CR0_TS;
    faults(&[0x9b], mode, 7, None);
    mode.cr0 &= !CR0_MP;
    completed(&[0x9b], mode, regs(), Kind::Fwait, 1);
}

#[test]
fn lock_prefix_is_ud_on_every_handled_instruction() {
    let cases: [&[u8]; 10] = [
        &[0xf0, 0xcc],
        &[0xf0, 0xcd, 0x80],
        &[0xf0, 0x9b],
        &[0xf0, 0x0f, 0x01, 0xca],
        &[0xf0, 0x0f, 0x01, 0xcb],
        &[0xf0, 0x0f, 0x01, 0xd0],
        &[0xf0, 0x0f, 0x01, 0xf9],
        &[0xf0, 0xf3, 0x0f, 0xb8, 0xc1],
        &[0xf3, 0xf0, 0x48, 0x0f, 0xb8, 0x01], // memory form too: #UD comes first
        &[0xf2, 0xf0, 0x0f, 0x38, 0xf1, 0xc1],
    ];
    for bytes in cases {
        faults(bytes, long64(), 6, None);
    }
}

#[test]
fn clac_stac_toggle_ac_at_cpl0() {
    let mut r = regs();
    r.rflags = 0x2 | (1 << 18) | 0x1;
    let after = completed(&[0x0f, 0x01, 0xca], long64(), r, Kind::Clac, 3);
    assert_eq!(after.rflags, 0x3);
    let after = completed(&[0x0f, 0x01, 0xcb], long64(), after, Kind::Stac, 3);
    assert_eq!(after.rflags, 0x3 | (1 << 18));
    // REX and segment prefixes do not change them.
    let after = completed(&[0x41, 0x0f, 0x01, 0xca], long64(), after, Kind::Clac, 4);
    assert_eq!(after.rflags, 0x3);
    assert_eq!(after.gpr, regs().gpr);
}

#[test]
fn clac_stac_ud_at_cpl3_and_in_real_mode() {
    let user = CpuMode { cpl: 3, ..long64() };
    faults(&[0x0f, 0x01, 0xca], user, 6, None);
    faults(&[0x0f, 0x01, 0xcb], user, 6, None);
    let real = CpuMode {
        cr0: 0,
        cpl: 0,
        ..code16()
    };
    faults(&[0x0f, 0x01, 0xca], real, 6, None);
}

#[test]
fn group7_with_66_f2_f3_is_another_instruction() {
    unhandled(&[0xf3, 0x0f, 0x01, 0xca], long64(), "eretu");
    unhandled(&[0xf2, 0x0f, 0x01, 0xca], long64(), "erets");
    unhandled(&[0x66, 0x0f, 0x01, 0xcb], long64(), "stac");
    unhandled(&[0x66, 0x0f, 0x01, 0xd0], long64(), "xgetbv");
    unhandled(&[0xf3, 0x0f, 0x01, 0xf9], long64(), "rdtscp");
}

#[test]
fn xgetbv_reads_xcr_and_zero_extends() {
    let mut r = regs();
    r.gpr[Regs::RCX] = 0xffff_ffff_0000_0000; // only ECX selects the XCR
    let mut cpu = MockCpu {
        xcr0: 0x8000_0001_0000_02e7,
        ..MockCpu::default()
    };
    let before = r;
    assert_eq!(
        crate::fix_up(&[0x0f, 0x01, 0xd0], long64(), &mut r, &mut cpu),
        Outcome::Completed(Kind::Xgetbv)
    );
    assert_eq!(r.gpr[Regs::RAX], 0x2e7);
    assert_eq!(r.gpr[Regs::RDX], 0x8000_0001);
    assert_eq!(r.gpr[Regs::RCX], before.gpr[Regs::RCX]);
    assert_eq!(r.gpr[Regs::RBX], before.gpr[Regs::RBX]);
    assert_eq!(r.rip, before.rip + 3);
    assert_eq!(r.rflags, before.rflags);
}

#[test]
fn xgetbv_faults() {
    let mut r = regs();
    r.gpr[Regs::RCX] = 5;
    let before = r;
    let out = run(&[0x0f, 0x01, 0xd0], long64(), &mut r);
    assert_eq!(
        out,
        Outcome::InjectException {
            kind: Kind::Xgetbv,
            vector: 13,
            error_code: Some(0)
        }
    );
    assert_eq!(r, before);
    let no_osxsave = CpuMode { cr4: 0, ..long64() };
    faults(&[0x0f, 0x01, 0xd0], no_osxsave, 6, None);
}

#[test]
fn rdtscp_writes_edx_eax_ecx() {
    let before = regs();
    let after = completed(&[0x0f, 0x01, 0xf9], long64(), before, Kind::Rdtscp, 3);
    assert_eq!(after.gpr[Regs::RAX], 0x5566_7788);
    assert_eq!(after.gpr[Regs::RDX], 0x1122_3344);
    assert_eq!(after.gpr[Regs::RCX], 3);
    assert_eq!(after.gpr[Regs::RBX..], before.gpr[Regs::RBX..]);
    // CR4.TSD only matters above CPL 0.
    let tsd = CpuMode {
        cr4: CR4_TSD,
        ..long64()
    };
    completed(&[0x0f, 0x01, 0xf9], tsd, before, Kind::Rdtscp, 3);
    faults(&[0x0f, 0x01, 0xf9], CpuMode { cpl: 3, ..tsd }, 13, Some(0));
    let user = CpuMode { cpl: 3, ..long64() };
    completed(&[0x0f, 0x01, 0xf9], user, before, Kind::Rdtscp, 3);
}

#[test]
fn rdtscp_without_tsc_aux_stops_the_vm_untouched() {
    let mut r = regs();
    let before = r;
    let mut cpu = MockCpu {
        tsc_aux: None,
        ..MockCpu::default()
    };
    let out = crate::fix_up(&[0x0f, 0x01, 0xf9], long64(), &mut r, &mut cpu);
    assert!(matches!(out, Outcome::Unhandled { mnemonic: "rdtscp", .. }), "{out:?}");
    assert_eq!(r, before);
}

#[test]
fn state_is_read_only_when_needed() {
    let mut cpu = MockCpu::default();
    let mut r = regs();
    crate::fix_up(&[0xcc], long64(), &mut r, &mut cpu);
    crate::fix_up(&[0xf3, 0x0f, 0xb8, 0xc1], long64(), &mut r, &mut cpu);
    assert_eq!(cpu.reads, 0);
}

#[test]
fn virtual_8086_mode_is_unhandled() {
    let mut r = Regs {
        rflags: 0x2 | (1 << 17),
        ..regs()
    };
    let before = r;
    let out = run(&[0xcc], prot32(), &mut r);
    assert!(matches!(out, Outcome::Unhandled { mnemonic: "int3", .. }));
    assert_eq!(r, before);
}

#[test]
fn kinds_have_distinct_names() {
    let mut names: Vec<_> = Kind::ALL.iter().map(Kind::name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Kind::ALL.len());
    assert_eq!(Kind::Crc32.to_string(), "crc32");
    let out = Outcome::Unhandled {
        mnemonic: "x",
        reason: "y",
    };
    assert_eq!(out.kind(), None);
}

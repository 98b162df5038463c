//! popcnt, lzcnt, tzcnt: operand sizes, register selection, flags, prefixes, memory forms.

use super::*;
use crate::{Kind, Regs};

const CF: u64 = 1;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const OF: u64 = 1 << 11;
const ALL_STATUS: u64 = CF | PF | AF | ZF | SF | OF;

fn with(idx: usize, value: u64) -> Regs {
    let mut r = regs();
    r.gpr[idx] = value;
    r.rflags = 0x2 | ALL_STATUS | (1 << 9); // IF must survive
    r
}

#[test]
fn popcnt_64_32_16() {
    // popcnt rax, rcx
    let r = completed(
        &[0xf3, 0x48, 0x0f, 0xb8, 0xc1],
        long64(),
        with(1, u64::MAX),
        Kind::Popcnt,
        5,
    );
    assert_eq!(r.gpr[0], 64);
    assert_eq!(r.rflags, 0x2 | (1 << 9), "all status flags cleared, ZF too");
    // popcnt eax, ecx: only the low 32 bits count; rax is zero-extended.
    let r = completed(
        &[0xf3, 0x0f, 0xb8, 0xc1],
        long64(),
        with(1, 0xffff_0000_0000_0007),
        Kind::Popcnt,
        4,
    );
    assert_eq!(r.gpr[0], 3);
    // popcnt ax, cx (66 before or after F3): merges into rax.
    for bytes in [[0x66, 0xf3, 0x0f, 0xb8, 0xc1], [0xf3, 0x66, 0x0f, 0xb8, 0xc1]] {
        let r = completed(&bytes, long64(), with(1, 0xf_ff0f), Kind::Popcnt, 5);
        assert_eq!(r.gpr[0], (regs().gpr[0] & !0xffff) | 12);
    }
    // REX.W wins over 66.
    let r = completed(
        &[0x66, 0xf3, 0x48, 0x0f, 0xb8, 0xc1],
        long64(),
        with(1, u64::MAX),
        Kind::Popcnt,
        6,
    );
    assert_eq!(r.gpr[0], 64);
}

#[test]
fn popcnt_zero_sets_only_zf() {
    let r = completed(&[0xf3, 0x48, 0x0f, 0xb8, 0xc1], long64(), with(1, 0), Kind::Popcnt, 5);
    assert_eq!(r.gpr[0], 0);
    assert_eq!(r.rflags & ALL_STATUS, ZF);
    // Zero in the low 32 bits is zero for a 32-bit popcnt.
    let r = completed(
        &[0xf3, 0x0f, 0xb8, 0xc1],
        long64(),
        with(1, 0xffff_ffff_0000_0000),
        Kind::Popcnt,
        4,
    );
    assert_eq!(r.rflags & ALL_STATUS, ZF);
}

#[test]
fn rex_r_and_b_select_r8_to_r15() {
    // popcnt r9, r10 (REX.WRB)
    let before = with(10, 0xf0f0);
    let r = completed(&[0xf3, 0x4d, 0x0f, 0xb8, 0xca], long64(), before, Kind::Popcnt, 5);
    assert_eq!(r.gpr[9], 8);
    assert_eq!(r.gpr[1], before.gpr[1], "rcx untouched");
    // popcnt r15d, eax (REX.R): 32-bit write zero-extends r15.
    let r = completed(
        &[0xf3, 0x44, 0x0f, 0xb8, 0xf8],
        long64(),
        with(0, 0x1_0000_0001),
        Kind::Popcnt,
        5,
    );
    assert_eq!(r.gpr[15], 1);
    // popcnt eax, r8d (REX.B)
    let r = completed(
        &[0xf3, 0x41, 0x0f, 0xb8, 0xc0],
        long64(),
        with(8, 0b1011),
        Kind::Popcnt,
        5,
    );
    assert_eq!(r.gpr[0], 3);
}

#[test]
fn rex_before_a_legacy_prefix_is_ignored() {
    // 48 F3 ...: the REX.W is not immediately before the opcode, so this is popcnt eax, ecx.
    let r = completed(
        &[0x48, 0xf3, 0x0f, 0xb8, 0xc1],
        long64(),
        with(1, u64::MAX),
        Kind::Popcnt,
        5,
    );
    assert_eq!(r.gpr[0], 32);
    // The last REX wins: 41 48 → REX.W only.
    let r = completed(
        &[0xf3, 0x41, 0x48, 0x0f, 0xb8, 0xc1],
        long64(),
        with(1, u64::MAX),
        Kind::Popcnt,
        6,
    );
    assert_eq!(r.gpr[0], 64);
}

#[test]
fn sizes_outside_64_bit_mode() {
    // 32-bit code: default 32, 66 → 16.
    let r = completed(&[0xf3, 0x0f, 0xb8, 0xc1], prot32(), with(1, u64::MAX), Kind::Popcnt, 4);
    assert_eq!(r.gpr[0], 32);
    let r = completed(
        &[0x66, 0xf3, 0x0f, 0xb8, 0xc1],
        prot32(),
        with(1, u64::MAX),
        Kind::Popcnt,
        5,
    );
    assert_eq!(r.gpr[0] & 0xffff, 16);
    // 16-bit code: default 16, 66 → 32.
    let r = completed(&[0xf3, 0x0f, 0xb8, 0xc1], code16(), with(1, u64::MAX), Kind::Popcnt, 4);
    assert_eq!(r.gpr[0], (regs().gpr[0] & !0xffff) | 16);
    let r = completed(
        &[0x66, 0xf3, 0x0f, 0xb8, 0xc1],
        code16(),
        with(1, u64::MAX),
        Kind::Popcnt,
        5,
    );
    assert_eq!(r.gpr[0], 32);
    // 40-4F are inc/dec outside 64-bit mode, not REX.
    unhandled(&[0xf3, 0x48, 0x0f, 0xb8, 0xc1], prot32(), "dec");
}

#[test]
fn lzcnt_flags_and_sizes() {
    // lzcnt rax, rcx
    let r = completed(&[0xf3, 0x48, 0x0f, 0xbd, 0xc1], long64(), with(1, 1), Kind::Lzcnt, 5);
    assert_eq!((r.gpr[0], r.rflags & ALL_STATUS), (63, 0));
    let r = completed(&[0xf3, 0x48, 0x0f, 0xbd, 0xc1], long64(), with(1, 0), Kind::Lzcnt, 5);
    assert_eq!((r.gpr[0], r.rflags & ALL_STATUS), (64, CF));
    let r = completed(
        &[0xf3, 0x48, 0x0f, 0xbd, 0xc1],
        long64(),
        with(1, 1 << 63),
        Kind::Lzcnt,
        5,
    );
    assert_eq!((r.gpr[0], r.rflags & ALL_STATUS), (0, ZF));
    // lzcnt eax, ecx on a value with only high bits set: source is 32 bits.
    let r = completed(
        &[0xf3, 0x0f, 0xbd, 0xc1],
        long64(),
        with(1, 0xffff_0000_0000_0000),
        Kind::Lzcnt,
        4,
    );
    assert_eq!((r.gpr[0], r.rflags & ALL_STATUS), (32, CF));
    // lzcnt ax, cx
    let r = completed(
        &[0x66, 0xf3, 0x0f, 0xbd, 0xc1],
        long64(),
        with(1, 0x00ff),
        Kind::Lzcnt,
        5,
    );
    assert_eq!(r.gpr[0] & 0xffff, 8);
    assert_eq!(r.gpr[0] >> 16, regs().gpr[0] >> 16);
}

#[test]
fn tzcnt_flags_and_sizes() {
    // tzcnt rdx, rbx
    let r = completed(
        &[0xf3, 0x48, 0x0f, 0xbc, 0xd3],
        long64(),
        with(3, 1 << 40),
        Kind::Tzcnt,
        5,
    );
    assert_eq!((r.gpr[2], r.rflags & ALL_STATUS), (40, 0));
    let r = completed(&[0xf3, 0x48, 0x0f, 0xbc, 0xd3], long64(), with(3, 1), Kind::Tzcnt, 5);
    assert_eq!((r.gpr[2], r.rflags & ALL_STATUS), (0, ZF));
    let r = completed(&[0xf3, 0x0f, 0xbc, 0xd3], long64(), with(3, 1 << 40), Kind::Tzcnt, 4);
    assert_eq!((r.gpr[2], r.rflags & ALL_STATUS), (32, CF));
    let r = completed(&[0x66, 0xf3, 0x0f, 0xbc, 0xd3], long64(), with(3, 0), Kind::Tzcnt, 5);
    assert_eq!((r.gpr[2] & 0xffff, r.rflags & ALL_STATUS), (16, CF));
}

#[test]
fn same_register_source_and_destination() {
    // popcnt rax, rax
    let r = completed(
        &[0xf3, 0x48, 0x0f, 0xb8, 0xc0],
        long64(),
        with(0, 0xff),
        Kind::Popcnt,
        5,
    );
    assert_eq!(r.gpr[0], 8);
}

#[test]
fn reference_check_over_many_values() {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = x >> (x % 61);
        let pop = completed(&[0xf3, 0x48, 0x0f, 0xb8, 0xc1], long64(), with(1, v), Kind::Popcnt, 5);
        let lz = completed(&[0xf3, 0x48, 0x0f, 0xbd, 0xc1], long64(), with(1, v), Kind::Lzcnt, 5);
        let tz = completed(&[0xf3, 0x48, 0x0f, 0xbc, 0xc1], long64(), with(1, v), Kind::Tzcnt, 5);
        assert_eq!(pop.gpr[0], u64::from(v.count_ones()));
        assert_eq!(lz.gpr[0], u64::from(v.leading_zeros()));
        assert_eq!(tz.gpr[0], u64::from(v.trailing_zeros()));
        let low = u32::try_from(v & 0xffff_ffff).unwrap_or(0);
        let pop32 = completed(&[0xf3, 0x0f, 0xb8, 0xc1], long64(), with(1, v), Kind::Popcnt, 4);
        assert_eq!(pop32.gpr[0], u64::from(low.count_ones()));
    }
}

#[test]
fn memory_forms_and_missing_f3_are_unhandled() {
    let reason = unhandled(&[0xf3, 0x48, 0x0f, 0xb8, 0x01], long64(), "popcnt");
    assert!(reason.contains("memory"));
    unhandled(&[0xf3, 0x0f, 0xbd, 0x44, 0x24, 0x08], long64(), "lzcnt");
    unhandled(&[0xf3, 0x0f, 0xbc, 0x05, 0, 0, 0, 0], long64(), "tzcnt");
    unhandled(&[0x0f, 0xb8, 0xc1], long64(), "jmpe");
    unhandled(&[0x0f, 0xbc, 0xc1], long64(), "bsf");
    unhandled(&[0x0f, 0xbd, 0xc1], long64(), "bsr");
    unhandled(&[0xf2, 0x0f, 0xbd, 0xc1], long64(), "bsr");
    let reason = unhandled(&[0xf2, 0xf3, 0x0f, 0xb8, 0xc1], long64(), "popcnt");
    assert!(reason.contains("F2"));
}

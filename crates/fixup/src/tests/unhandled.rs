//! Instructions the fix-up must refuse with a useful name, and malformed input.

use super::*;
use crate::Outcome;

#[test]
fn named_unhandled_instructions() {
    let cases: &[(&[u8], &str)] = &[
        (&[0x0f, 0x01, 0xd1], "xsetbv"),
        (&[0x0f, 0xae, 0x21], "xsave"),
        (&[0x48, 0x0f, 0xae, 0x29], "xrstor64"),
        (&[0x0f, 0xae, 0x2f], "xrstor"),
        (&[0x0f, 0xae, 0x31], "xsaveopt"),
        (&[0x48, 0x0f, 0xc7, 0x2f], "xsaves64"),
        (&[0xf0, 0x48, 0x0f, 0xc7, 0x0e], "cmpxchg16b"),
        (&[0xf0, 0x0f, 0xc7, 0x0e], "cmpxchg8b"),
        (&[0x0f, 0x01, 0xc1], "vmcall"),
        (&[0x0f, 0x01, 0xd9], "vmmcall"),
        (&[0x66, 0x0f, 0xef, 0xc0], "pxor"),
        (&[0x0f, 0x57, 0xc0], "xorps"),
        (&[0x66, 0x48, 0x0f, 0x6e, 0xc0], "movq"),
        (&[0x66, 0x0f, 0x7e, 0xc0], "movd"),
        (&[0x66, 0x0f, 0xd6, 0x07], "movq"),
        (&[0xc5, 0xf9, 0xef, 0xc0], "vex"),
        (&[0xc4, 0xe2, 0x79, 0x18, 0x07], "vex"),
        (&[0x62, 0xf1, 0x7d, 0x48, 0xef, 0xc0], "evex"),
        (&[0x66, 0x0f, 0x3a, 0x0f, 0xc1, 0x08], "sse4"),
        (&[0xdb, 0xe3], "x87"),
        (&[0xf1], "int1"),
        (&[0x0f, 0x01, 0x10], "lgdt"),
        (&[0x0f, 0xc7, 0xf8], "rdseed"),
        (&[0xf3, 0x0f, 0xc7, 0xf8], "rdpid"),
        (&[0x0f, 0xae, 0xe8], "lfence"),
        (&[0x90], "unknown"),
        (&[0x0f, 0x0b], "unknown"),
    ];
    for (bytes, name) in cases {
        unhandled(bytes, long64(), name);
    }
    // Outside 64-bit mode, c4/c5 with a memory ModRM are les/lds.
    unhandled(&[0xc4, 0x06], prot32(), "les");
    unhandled(&[0xc5, 0xf9, 0xef, 0xc0], prot32(), "vex");
}

#[test]
fn reasons_name_the_problem() {
    assert!(unhandled(&[0x0f, 0xae, 0x2f], long64(), "xrstor").contains("memory"));
    assert!(unhandled(&[0x0f, 0x01, 0xc1], long64(), "vmcall").contains("hypercall"));
    assert!(unhandled(&[0xc5, 0xf9, 0xef, 0xc0], long64(), "vex").contains("AVX"));
    assert!(unhandled(&[0x66, 0x0f, 0xef, 0xc0], long64(), "pxor").contains("SSE"));
}

#[test]
fn empty_and_truncated_input() {
    assert!(unhandled(&[], long64(), "unknown").contains("no instruction"));
    let truncated: &[&[u8]] = &[
        &[0xcd],
        &[0x66],
        &[0xf3, 0x48],
        &[0xf3, 0x0f],
        &[0xf3, 0x0f, 0xb8],
        &[0x0f, 0x01],
        &[0x0f],
        &[0xf2, 0x0f, 0x38],
        &[0xf2, 0x0f, 0x38, 0xf1],
        &[0x0f, 0xae],
    ];
    for bytes in truncated {
        let reason = unhandled(bytes, long64(), "unknown");
        assert!(reason.contains("end before"), "{bytes:02x?}: {reason}");
    }
}

#[test]
fn fifteen_byte_limit() {
    // 14 prefixes + int3 = 15 bytes: legal.
    let mut bytes = vec![0x66; 14];
    bytes.push(0xcc);
    let mut r = regs();
    let before = r;
    assert!(matches!(
        run(&bytes, long64(), &mut r),
        Outcome::InjectException { vector: 3, .. }
    ));
    assert_eq!(r.rip, before.rip + 15);
    // 15 prefixes + int3 = 16 bytes: too long, and nothing past 15 bytes is read.
    let mut bytes = vec![0x2e; 15];
    bytes.push(0xcc);
    assert!(unhandled(&bytes, long64(), "unknown").contains("15"));
    assert!(unhandled(&[0x66; 40], long64(), "unknown").contains("15"));
}

#[test]
fn trailing_bytes_are_not_part_of_the_instruction() {
    // KVM may hand over up to 15 bytes; only the first instruction counts.
    let mut bytes = vec![0xf3, 0x0f, 0xb8, 0xc1];
    bytes.extend_from_slice(&[0xcc; 11]);
    completed(&bytes, long64(), regs(), crate::Kind::Popcnt, 4);
}

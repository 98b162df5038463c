//! crc32: CRC32C test vectors through the instruction, every source size, byte registers.

use super::*;
use crate::{Kind, Regs};

/// crc32 rax, rcx
const CRC32_RAX_RCX: [u8; 6] = [0xf2, 0x48, 0x0f, 0x38, 0xf1, 0xc1];

/// CRC32C of `data` (a multiple of 8 bytes) computed by running crc32 rax, rcx on it.
fn crc_via_instruction(data: &[u8]) -> u64 {
    let mut r = regs();
    r.gpr[Regs::RAX] = 0xffff_ffff;
    for chunk in data.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        r.gpr[Regs::RCX] = u64::from_le_bytes(word);
        r = completed(&CRC32_RAX_RCX, long64(), r, Kind::Crc32, 6);
    }
    r.gpr[Regs::RAX] ^ 0xffff_ffff
}

#[test]
fn rfc3720_vectors() {
    // RFC 3720 appendix B.4 (iSCSI CRC32C examples).
    assert_eq!(crc_via_instruction(&[0; 32]), 0x8a91_36aa);
    assert_eq!(crc_via_instruction(&[0xff; 32]), 0x62a8_ab43);
    let ascending: Vec<u8> = (0..32).collect();
    assert_eq!(crc_via_instruction(&ascending), 0x46dd_794e);
    let descending: Vec<u8> = (0..32).rev().collect();
    assert_eq!(crc_via_instruction(&descending), 0x113f_db5c);
}

#[test]
fn check_value_bytewise_through_crc32_eax_cl() {
    let mut r = regs();
    r.gpr[Regs::RAX] = 0xffff_ffff;
    for &b in b"123456789" {
        r.gpr[Regs::RCX] = 0xdead_be00 | u64::from(b); // only CL is the source
                                                       // crc32 eax, cl
        r = completed(&[0xf2, 0x0f, 0x38, 0xf0, 0xc1], long64(), r, Kind::Crc32, 5);
    }
    assert_eq!(r.gpr[Regs::RAX] ^ 0xffff_ffff, 0xe306_9283);
}

/// Runs one crc32 on a fresh register file with rax = crc, rcx = data; returns rax.
fn crc_step(bytes: &[u8], mode: crate::CpuMode, crc: u64, data: u64) -> Regs {
    let mut r = regs();
    r.gpr[Regs::RAX] = crc;
    r.gpr[Regs::RCX] = data;
    let len = u64::try_from(bytes.len()).unwrap_or(0);
    completed(bytes, mode, r, Kind::Crc32, len)
}

#[test]
fn source_sizes_match_bytewise() {
    let data = 0x0123_4567_89ab_cdef_u64;
    let init = 0xffff_ffff_1234_5678_u64; // only the low 32 bits are the running CRC
    let bytewise = |n: usize| {
        let mut crc = init;
        for b in data.to_le_bytes().iter().take(n) {
            crc = crc_step(&[0xf2, 0x0f, 0x38, 0xf0, 0xc1], long64(), crc, u64::from(*b)).gpr[0];
        }
        crc
    };
    // crc32 eax, cx / ecx / rax, rcx; and 66 on the byte form is ignored.
    assert_eq!(
        crc_step(&[0x66, 0xf2, 0x0f, 0x38, 0xf1, 0xc1], long64(), init, data).gpr[0],
        bytewise(2)
    );
    assert_eq!(
        crc_step(&[0xf2, 0x0f, 0x38, 0xf1, 0xc1], long64(), init, data).gpr[0],
        bytewise(4)
    );
    assert_eq!(crc_step(&CRC32_RAX_RCX, long64(), init, data).gpr[0], bytewise(8));
    assert_eq!(
        crc_step(&[0x66, 0xf2, 0x0f, 0x38, 0xf0, 0xc1], long64(), init, data).gpr[0],
        bytewise(1)
    );
    // crc32 rax, cl (REX.W on the byte form): 64-bit destination, upper half zero.
    let r = crc_step(&[0xf2, 0x48, 0x0f, 0x38, 0xf0, 0xc1], long64(), init, data);
    assert_eq!(r.gpr[0], bytewise(1));
    assert_eq!(r.gpr[0] >> 32, 0);
    // 16-bit code: F1 without 66 takes r/m16; with 66 it takes r/m32.
    assert_eq!(
        crc_step(&[0xf2, 0x0f, 0x38, 0xf1, 0xc1], code16(), init, data).gpr[0],
        bytewise(2)
    );
    assert_eq!(
        crc_step(&[0x66, 0xf2, 0x0f, 0x38, 0xf1, 0xc1], code16(), init, data).gpr[0],
        bytewise(4)
    );
    assert_eq!(
        crc_step(&[0xf2, 0x0f, 0x38, 0xf1, 0xc1], prot32(), init, data).gpr[0],
        bytewise(4)
    );
}

#[test]
fn byte_registers_ah_versus_spl() {
    let mut r = regs();
    r.gpr[Regs::RAX] = 0;
    r.gpr[Regs::RSP] = 0x11;
    // crc32 eax, ah (no REX: rm = 4 is AH = bits 15:8 of rax = 0).
    let ah = completed(&[0xf2, 0x0f, 0x38, 0xf0, 0xc4], long64(), r, Kind::Crc32, 5);
    let mut r0 = regs();
    r0.gpr[Regs::RAX] = 0;
    r0.gpr[Regs::RCX] = 0;
    let from_zero_byte = completed(&[0xf2, 0x0f, 0x38, 0xf0, 0xc1], long64(), r0, Kind::Crc32, 5);
    assert_eq!(ah.gpr[0], from_zero_byte.gpr[0]);
    // crc32 eax, spl (REX 40: rm = 4 is SPL = 0x11).
    let spl = completed(&[0xf2, 0x40, 0x0f, 0x38, 0xf0, 0xc4], long64(), r, Kind::Crc32, 6);
    r0.gpr[Regs::RCX] = 0x11;
    let from_11 = completed(&[0xf2, 0x0f, 0x38, 0xf0, 0xc1], long64(), r0, Kind::Crc32, 5);
    assert_eq!(spl.gpr[0], from_11.gpr[0]);
    assert_ne!(spl.gpr[0], ah.gpr[0]);
}

#[test]
fn rex_r_b_and_flags_untouched() {
    // crc32 r9d, r8d (REX.RB)
    let mut r = regs();
    r.rflags = 0x8d7; // status flags are not affected by crc32
    let via_r = completed(&[0xf2, 0x45, 0x0f, 0x38, 0xf1, 0xc8], long64(), r, Kind::Crc32, 6);
    let expected = crc_step(&[0xf2, 0x0f, 0x38, 0xf1, 0xc1], long64(), r.gpr[9], r.gpr[8]).gpr[0];
    assert_eq!(via_r.gpr[9], expected);
    assert_eq!(via_r.gpr[9] >> 32, 0, "32-bit destination zero-extends");
    assert_eq!(via_r.gpr[8], r.gpr[8]);
    assert_eq!(via_r.rflags, 0x8d7);
}

#[test]
fn unhandled_crc32_forms() {
    let reason = unhandled(&[0xf2, 0x0f, 0x38, 0xf1, 0x06], long64(), "crc32");
    assert!(reason.contains("memory"));
    unhandled(&[0xf2, 0xf3, 0x0f, 0x38, 0xf1, 0xc1], long64(), "crc32");
    unhandled(&[0x0f, 0x38, 0xf0, 0x06], long64(), "movbe");
    unhandled(&[0x66, 0x0f, 0x38, 0x00, 0xc1], long64(), "sse");
}

//! Brute force: pseudo-random byte strings never panic, and outcomes keep their promises.

use super::*;
use crate::{fix_up, Outcome, Regs};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// Bytes that steer random input into the decoder's interesting paths.
const INTERESTING: [u8; 24] = [
    0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x2e, 0x40, 0x48, 0x4d, 0x0f, 0x01, 0x38, 0xb8, 0xbc, 0xbd, 0xf0, 0xf1, 0xca, 0xcb,
    0xd0, 0xf9, 0xcc, 0xcd, 0x9b,
];

fn random_bytes(rng: &mut XorShift) -> Vec<u8> {
    let len = usize::from(rng.byte() % 21);
    (0..len)
        .map(|_| {
            let b = rng.byte();
            if b & 1 == 0 {
                INTERESTING[usize::from(b / 2) % INTERESTING.len()]
            } else {
                rng.byte()
            }
        })
        .collect()
}

fn random_mode(rng: &mut XorShift) -> crate::CpuMode {
    let bits = rng.next();
    crate::CpuMode {
        long_mode_64: bits & 1 != 0,
        default_32: bits & 2 != 0,
        cpl: if bits & 4 != 0 { 3 } else { 0 },
        cr0: (bits >> 8) & 0xb,
        cr4: (bits >> 16) & (CR4_OSXSAVE | CR4_TSD),
    }
}

#[test]
fn random_input_never_panics_and_keeps_promises() {
    let mut rng = XorShift(0x853c_49e6_748f_ea9b);
    let mut seen = [0usize; 4];
    for _ in 0..200_000 {
        let bytes = random_bytes(&mut rng);
        let mode = random_mode(&mut rng);
        let mut before = Regs {
            gpr: [0; 16],
            rip: rng.next(),
            rflags: rng.next() & 0x0004_0cd7 | 2,
        };
        for r in before.gpr.iter_mut() {
            *r = rng.next();
        }
        let mut cpu = MockCpu {
            tsc_aux: (rng.byte() > 8).then_some(7),
            ..MockCpu::default()
        };
        let mut after = before;
        let out = fix_up(&bytes, mode, &mut after, &mut cpu);
        let rip_delta = after.rip.wrapping_sub(before.rip);
        match out {
            Outcome::Unhandled { mnemonic, reason } => {
                seen[0] += 1;
                assert_eq!(after, before, "{bytes:02x?} unhandled must not touch regs");
                assert!(!mnemonic.is_empty() && !reason.is_empty());
            }
            Outcome::InjectException { vector: 6 | 7 | 13, .. } => {
                seen[1] += 1;
                assert_eq!(after, before, "{bytes:02x?} fault must not touch regs");
            }
            Outcome::InjectException { .. } | Outcome::Completed(_) => {
                seen[2] += 1;
                if mode.long_mode_64 {
                    assert!((1..=15).contains(&rip_delta), "{bytes:02x?}: rip moved {rip_delta}");
                }
            }
            Outcome::InjectSoftInterrupt { insn_len, .. } => {
                seen[3] += 1;
                assert!((2..=15).contains(&insn_len));
                if mode.long_mode_64 {
                    assert_eq!(rip_delta, u64::from(insn_len));
                }
            }
        }
    }
    // The generator must actually reach every outcome.
    assert!(seen.iter().all(|&n| n > 100), "{seen:?}");
}

#[test]
fn every_two_byte_prefix_of_every_opcode() {
    // Exhaustive over the first two bytes, in all three code sizes.
    for mode in [long64(), prot32(), code16()] {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for bytes in [&[a][..], &[a, b], &[0x0f, a, b], &[0xf3, 0x0f, a, b]] {
                    let before = regs();
                    let mut after = before;
                    if let Outcome::Unhandled { .. } = run(bytes, mode, &mut after) {
                        assert_eq!(after, before);
                    }
                }
            }
        }
    }
}

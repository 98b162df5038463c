//! Register access by operand size and the arithmetic of the completed instructions.
//!
//! Owns the x86 rules for partial registers (SDM vol. 1 §3.4.1.1: 32-bit writes zero-extend,
//! 16-bit writes merge; ah/ch/dh/bh without REX) and the pure functions popcnt, lzcnt, tzcnt
//! and CRC32C. Knows nothing about decoding or exceptions.

use crate::decode::Size;
use crate::Regs;

/// RFLAGS bits (SDM vol. 1 §3.4.3).
pub(crate) const CF: u64 = 1 << 0;
pub(crate) const PF: u64 = 1 << 2;
pub(crate) const AF: u64 = 1 << 4;
pub(crate) const ZF: u64 = 1 << 6;
pub(crate) const SF: u64 = 1 << 7;
pub(crate) const OF: u64 = 1 << 11;
pub(crate) const VM: u64 = 1 << 17;
pub(crate) const AC: u64 = 1 << 18;
/// The six status flags arithmetic instructions define.
pub(crate) const STATUS: u64 = CF | PF | AF | ZF | SF | OF;

/// Reads register `idx` at `size`. Byte registers 4..7 are ah/ch/dh/bh unless a REX prefix
/// is present, in which case they are spl/bpl/sil/dil.
pub(crate) fn read_gpr(regs: &Regs, idx: u8, size: Size, rex: bool) -> u64 {
    if size == Size::B8 && !rex && (4..8).contains(&idx) {
        return (regs.gpr[usize::from(idx - 4)] >> 8) & 0xff;
    }
    regs.gpr[usize::from(idx & 15)] & size.mask()
}

/// Writes `value` to register `idx` as a `size` (16, 32 or 64-bit) destination: 32-bit
/// writes zero-extend to 64 bits, 16-bit writes keep bits 63:16. (In compatibility mode the
/// upper half after a 32-bit write is undefined; zero is what CPUs do.)
pub(crate) fn write_gpr(regs: &mut Regs, idx: u8, size: Size, value: u64) {
    let reg = &mut regs.gpr[usize::from(idx & 15)];
    *reg = match size {
        Size::B32 | Size::B64 => value & size.mask(),
        Size::B8 | Size::B16 => (*reg & !size.mask()) | (value & size.mask()),
    };
}

/// Number of set bits in the low `size` bits of `v`.
pub(crate) fn popcnt(v: u64, size: Size) -> u64 {
    u64::from((v & size.mask()).count_ones())
}

/// Number of leading zero bits of the `size`-bit value; `size` bits if it is zero.
pub(crate) fn lzcnt(v: u64, size: Size) -> u64 {
    let v = v & size.mask();
    u64::from(v.leading_zeros() - (64 - size.bits()))
}

/// Number of trailing zero bits of the `size`-bit value; `size` bits if it is zero.
pub(crate) fn tzcnt(v: u64, size: Size) -> u64 {
    let v = v & size.mask();
    if v == 0 {
        u64::from(size.bits())
    } else {
        u64::from(v.trailing_zeros())
    }
}

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78) of the low `size` bytes of `data`,
/// least-significant byte first, continuing from `crc`; no pre- or post-inversion, exactly
/// as the CRC32 instruction computes it (SDM vol. 2 CRC32).
pub(crate) fn crc32c(crc: u64, data: u64, size: Size) -> u64 {
    const POLY: u64 = 0x82f6_3b78;
    let mut crc = crc & 0xffff_ffff;
    for i in 0..size.bytes() {
        crc ^= (data >> (8 * i)) & 0xff;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ POLY } else { crc >> 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [Size; 3] = [Size::B16, Size::B32, Size::B64];

    /// A small xorshift generator so the reference checks need no external crate.
    fn values() -> impl Iterator<Item = u64> {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let edges = [0, 1, 0x8000, 0xffff, 0x8000_0000, u64::MAX, 1 << 63];
        edges.into_iter().chain(std::iter::from_fn(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Vary the number of set bits so leading/trailing counts are spread out.
            Some(x >> (x % 64))
        }))
    }

    #[test]
    fn counts_match_std_reference() {
        for v in values().take(20_000) {
            for size in SIZES {
                let (pop, lz, tz) = match size {
                    Size::B16 => {
                        let t = u16::try_from(v & 0xffff).unwrap_or(0);
                        (t.count_ones(), t.leading_zeros(), t.trailing_zeros())
                    }
                    Size::B32 => {
                        let t = u32::try_from(v & 0xffff_ffff).unwrap_or(0);
                        (t.count_ones(), t.leading_zeros(), t.trailing_zeros())
                    }
                    _ => (v.count_ones(), v.leading_zeros(), v.trailing_zeros()),
                };
                assert_eq!(popcnt(v, size), u64::from(pop), "popcnt {v:#x} {size:?}");
                assert_eq!(lzcnt(v, size), u64::from(lz), "lzcnt {v:#x} {size:?}");
                assert_eq!(tzcnt(v, size), u64::from(tz), "tzcnt {v:#x} {size:?}");
            }
        }
    }

    #[test]
    fn crc32c_check_value() {
        // The standard CRC-32C check: "123456789" with ~0 in and ~0 out gives 0xE3069283.
        let mut crc = 0xffff_ffff;
        for b in b"123456789" {
            crc = crc32c(crc, u64::from(*b), Size::B8);
        }
        assert_eq!(crc ^ 0xffff_ffff, 0xe306_9283);
    }

    #[test]
    fn crc32c_wide_equals_bytewise() {
        for v in values().take(2_000) {
            for size in [Size::B16, Size::B32, Size::B64] {
                let mut bytewise = v.rotate_left(7);
                for i in 0..size.bytes() {
                    bytewise = crc32c(bytewise, v >> (8 * i), Size::B8);
                }
                assert_eq!(crc32c(v.rotate_left(7), v, size), bytewise);
            }
        }
    }

    #[test]
    fn partial_register_rules() {
        let mut regs = Regs::default();
        regs.gpr[0] = 0x1122_3344_5566_7788;
        assert_eq!(read_gpr(&regs, 4, Size::B8, false), 0x77); // ah
        assert_eq!(read_gpr(&regs, 0, Size::B8, false), 0x88); // al
        regs.gpr[4] = 0xabcd;
        assert_eq!(read_gpr(&regs, 4, Size::B8, true), 0xcd); // spl
        write_gpr(&mut regs, 0, Size::B16, 0xffff_0001);
        assert_eq!(regs.gpr[0], 0x1122_3344_5566_0001);
        write_gpr(&mut regs, 0, Size::B32, 0xdead_beef_cafe);
        assert_eq!(regs.gpr[0], 0xbeef_cafe);
        write_gpr(&mut regs, 15, Size::B64, u64::MAX);
        assert_eq!(regs.gpr[15], u64::MAX);
    }
}

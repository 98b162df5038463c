//! Decoder for exactly the instructions the fix-up completes (Intel SDM vol. 2, ch. 2).
//!
//! Owns prefixes, REX, the 0F / 0F38 opcode maps and ModRM. Everything else is returned as
//! [`Unrecognised`] with a best-effort name from [`crate::names`]. It does not own semantics
//! ([`crate::exec`]) and does not decode memory operands beyond noting that one is present:
//! completing those would need guest page-table walks, so they are never executed.

use crate::names::{self, Unrecognised};
use crate::{CpuMode, Kind};

/// Architectural maximum instruction length; longer instructions raise #GP.
pub(crate) const MAX_INSN_LEN: usize = 15;

/// An operand size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Size {
    B8,
    B16,
    B32,
    B64,
}

impl Size {
    pub(crate) fn bits(self) -> u32 {
        match self {
            Size::B8 => 8,
            Size::B16 => 16,
            Size::B32 => 32,
            Size::B64 => 64,
        }
    }

    pub(crate) fn bytes(self) -> u32 {
        self.bits() / 8
    }

    pub(crate) fn mask(self) -> u64 {
        u64::MAX >> (64 - self.bits())
    }
}

/// The r/m operand of a ModRM byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operand {
    /// Register-direct (mod = 11): register number 0..15, REX.B included.
    Reg(u8),
    /// A memory operand; its address bytes are not decoded.
    Mem,
}

/// A decoded instruction that the fix-up may complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Int3,
    IntN(u8),
    Into,
    Fwait,
    Clac,
    Stac,
    Xgetbv,
    Rdtscp,
    /// popcnt, lzcnt or tzcnt: `dst = f(src)`, both of `size`.
    BitCount {
        kind: Kind,
        size: Size,
        dst: u8,
        src: Operand,
    },
    /// crc32 dst, src: dst is 32 or 64 bits, src 8..64 bits.
    Crc32 {
        dst_size: Size,
        src_size: Size,
        dst: u8,
        src: Operand,
    },
}

impl Op {
    pub(crate) fn kind(&self) -> Kind {
        match *self {
            Op::Int3 => Kind::Int3,
            Op::IntN(_) => Kind::IntN,
            Op::Into => Kind::Into,
            Op::Fwait => Kind::Fwait,
            Op::Clac => Kind::Clac,
            Op::Stac => Kind::Stac,
            Op::Xgetbv => Kind::Xgetbv,
            Op::Rdtscp => Kind::Rdtscp,
            Op::BitCount { kind, .. } => kind,
            Op::Crc32 { .. } => Kind::Crc32,
        }
    }
}

/// A decoded instruction with the prefix facts its semantics depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insn {
    pub op: Op,
    /// Length in bytes; exact for every form that can be executed (not for `Operand::Mem`).
    pub len: u8,
    /// A LOCK prefix was present (every instruction here then raises #UD).
    pub lock: bool,
    /// A REX prefix is in effect (selects spl/bpl/sil/dil instead of ah/ch/dh/bh).
    pub rex: bool,
}

/// Legacy prefixes and REX seen before the opcode.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Prefixes {
    pub opsize: bool,
    pub lock: bool,
    pub f2: bool,
    pub f3: bool,
    pub rex: Option<u8>,
}

impl Prefixes {
    fn rex_bit(&self, bit: u8) -> bool {
        self.rex.is_some_and(|rex| rex & bit != 0)
    }

    pub(crate) fn w(&self) -> bool {
        self.rex_bit(0x08)
    }

    fn r(&self) -> bool {
        self.rex_bit(0x04)
    }

    fn b(&self) -> bool {
        self.rex_bit(0x01)
    }
}

/// Reads instruction bytes, never past [`MAX_INSN_LEN`].
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let end = bytes.len().min(MAX_INSN_LEN);
        Cursor {
            bytes: bytes.get(..end).unwrap_or_default(),
            pos: 0,
        }
    }

    pub(crate) fn next(&mut self) -> Result<u8, Unrecognised> {
        match self.bytes.get(self.pos) {
            Some(&byte) => {
                self.pos += 1;
                Ok(byte)
            }
            None if self.pos >= MAX_INSN_LEN => Err(names::TOO_LONG),
            None => Err(names::TRUNCATED),
        }
    }

    fn len(&self) -> u8 {
        // pos <= MAX_INSN_LEN (15), so this never saturates.
        u8::try_from(self.pos).unwrap_or(u8::MAX)
    }
}

/// Decodes the instruction at the start of `input`.
pub(crate) fn decode(input: &[u8], mode: CpuMode) -> Result<Insn, Unrecognised> {
    if input.is_empty() {
        return Err(names::EMPTY);
    }
    let mut cur = Cursor::new(input);
    let mut p = Prefixes::default();
    let opcode = loop {
        let byte = cur.next()?;
        match byte {
            // REX exists only in 64-bit mode; elsewhere 40-4F are inc/dec.
            0x40..=0x4f if mode.long_mode_64 => {
                p.rex = Some(byte);
                continue;
            }
            0x66 => p.opsize = true,
            0xf0 => p.lock = true,
            0xf2 => p.f2 = true,
            0xf3 => p.f3 = true,
            // Address size and segment overrides only affect memory operands.
            0x67 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            _ => break byte,
        }
        // A REX prefix not immediately before the opcode is ignored (SDM vol. 2 §2.2.1).
        p.rex = None;
    };
    let op = match opcode {
        0xcc => Op::Int3,
        0xcd => Op::IntN(cur.next()?),
        0xce => Op::Into,
        0x9b => Op::Fwait,
        0x0f => two_byte(&mut cur, mode, &p)?,
        _ => return Err(names::one_byte(opcode, &mut cur, mode)),
    };
    Ok(Insn {
        op,
        len: cur.len(),
        lock: p.lock,
        rex: p.rex.is_some(),
    })
}

/// Operand size of a general-purpose instruction (SDM vol. 1 §3.6, vol. 2 §2.2.1.2).
fn operand_size(mode: CpuMode, p: &Prefixes) -> Size {
    if mode.long_mode_64 {
        if p.w() {
            Size::B64
        } else if p.opsize {
            Size::B16
        } else {
            Size::B32
        }
    } else if mode.default_32 != p.opsize {
        Size::B32
    } else {
        Size::B16
    }
}

/// Reads ModRM: returns the reg field (with REX.R) and the r/m operand (with REX.B).
fn modrm(cur: &mut Cursor, p: &Prefixes) -> Result<(u8, Operand), Unrecognised> {
    let m = cur.next()?;
    let reg = ((m >> 3) & 7) | if p.r() { 8 } else { 0 };
    let rm = if m >> 6 == 3 {
        Operand::Reg((m & 7) | if p.b() { 8 } else { 0 })
    } else {
        Operand::Mem
    };
    Ok((reg, rm))
}

fn two_byte(cur: &mut Cursor, mode: CpuMode, p: &Prefixes) -> Result<Op, Unrecognised> {
    let op = cur.next()?;
    match op {
        0x01 => group7(cur, p),
        0x38 => map_0f38(cur, mode, p),
        0xb8 | 0xbc | 0xbd => bit_count(cur, mode, p, op),
        0xae | 0xc7 => {
            let m = cur.next()?;
            Err(names::group(op, m, p))
        }
        _ => Err(names::two_byte(op, p)),
    }
}

/// 0F 01 with mod = 11 and no 66/F2/F3 prefix (which would make it another instruction).
fn group7(cur: &mut Cursor, p: &Prefixes) -> Result<Op, Unrecognised> {
    let m = cur.next()?;
    if p.opsize || p.f2 || p.f3 {
        return Err(names::group7(m, p));
    }
    match m {
        0xca => Ok(Op::Clac),
        0xcb => Ok(Op::Stac),
        0xd0 => Ok(Op::Xgetbv),
        0xf9 => Ok(Op::Rdtscp),
        _ => Err(names::group7(m, p)),
    }
}

/// F3 0F B8 / BC / BD: popcnt, tzcnt, lzcnt.
fn bit_count(cur: &mut Cursor, mode: CpuMode, p: &Prefixes, op: u8) -> Result<Op, Unrecognised> {
    let kind = match op {
        0xb8 => Kind::Popcnt,
        0xbc => Kind::Tzcnt,
        _ => Kind::Lzcnt,
    };
    if p.f2 && p.f3 {
        return Err(names::conflicting_rep(kind.name()));
    }
    if !p.f3 {
        return Err(names::two_byte(op, p));
    }
    let (dst, src) = modrm(cur, p)?;
    let size = operand_size(mode, p);
    Ok(Op::BitCount { kind, size, dst, src })
}

/// 0F 38: only F2 0F 38 F0/F1 (crc32) is completed.
fn map_0f38(cur: &mut Cursor, mode: CpuMode, p: &Prefixes) -> Result<Op, Unrecognised> {
    let op = cur.next()?;
    if !matches!(op, 0xf0 | 0xf1) || !p.f2 {
        return Err(names::map_0f38(op, p));
    }
    if p.f3 {
        return Err(names::conflicting_rep(Kind::Crc32.name()));
    }
    let (dst, src) = modrm(cur, p)?;
    // F0 takes r/m8 even with 66; F1 takes r/m16/32/64 (SDM vol. 2 CRC32).
    let src_size = if op == 0xf0 { Size::B8 } else { operand_size(mode, p) };
    let dst_size = if mode.long_mode_64 && p.w() {
        Size::B64
    } else {
        Size::B32
    };
    Ok(Op::Crc32 {
        dst_size,
        src_size,
        dst,
        src,
    })
}

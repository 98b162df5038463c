//! A sampling profiler of the guest, run by the VMM: a thread kicks every vCPU out of
//! `KVM_RUN` at a fixed interval, the vCPU records its guest RIP, and at the end the samples are
//! resolved against the kernel's ELF symbol table. This is how hearth finds out where a guest
//! spends its time on hosts where that time is dominated by emulation (docs/pvm.md), without
//! any help from the guest.

use std::collections::HashMap;
use std::path::Path;

/// RIP → number of samples, for one vCPU.
pub type Samples = HashMap<u64, u64>;

/// A function symbol: start address and name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Symbol {
    addr: u64,
    name: String,
}

/// Function symbols of an ELF64 file (its `.symtab`), sorted by address.
pub struct SymbolTable {
    syms: Vec<Symbol>,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}
fn usize_at(b: &[u8], o: usize) -> Option<usize> {
    usize::try_from(u64_at(b, o)?).ok()
}

impl SymbolTable {
    /// Reads the symbol table of the ELF file at `path`; `None` if it has none or is not ELF64.
    pub fn from_elf(path: &Path) -> Option<Self> {
        Self::parse(&std::fs::read(path).ok()?)
    }

    fn parse(b: &[u8]) -> Option<Self> {
        if b.get(..5)? != b"\x7fELF\x02" {
            return None;
        }
        let shoff = usize_at(b, 0x28)?;
        let shentsize = usize::from(u16_at(b, 0x3a)?);
        let shnum = usize::from(u16_at(b, 0x3c)?);
        let section = |i: usize| -> Option<(u32, usize, usize, usize)> {
            let o = shoff.checked_add(i.checked_mul(shentsize)?)?;
            // (sh_type, sh_offset, sh_size, sh_link)
            Some((
                u32_at(b, o + 4)?,
                usize_at(b, o + 0x18)?,
                usize_at(b, o + 0x20)?,
                usize::try_from(u32_at(b, o + 0x28)?).ok()?,
            ))
        };
        const SHT_SYMTAB: u32 = 2;
        let (_, off, size, link) = (0..shnum).filter_map(section).find(|s| s.0 == SHT_SYMTAB)?;
        let (_, stroff, strsize, _) = section(link)?;
        let strtab = b.get(stroff..stroff.checked_add(strsize)?)?;
        let mut syms = Vec::new();
        for e in b.get(off..off.checked_add(size)?)?.chunks_exact(24) {
            let name_off = usize::try_from(u32_at(e, 0)?).ok()?;
            let info = e[4];
            let value = u64_at(e, 8)?;
            // STT_FUNC (2) or STT_NOTYPE (0, assembly entry points), non-zero address.
            if value == 0 || !matches!(info & 0xf, 0 | 2) {
                continue;
            }
            let name = strtab.get(name_off..)?.split(|c| *c == 0).next()?;
            if name.is_empty() || name.starts_with(b"__pfx_") {
                continue;
            }
            syms.push(Symbol {
                addr: value,
                name: String::from_utf8_lossy(name).into_owned(),
            });
        }
        syms.sort_by_key(|s| s.addr);
        syms.dedup_by_key(|s| s.addr);
        (!syms.is_empty()).then_some(Self { syms })
    }

    /// The function containing `addr` (the last symbol at or below it).
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.syms.partition_point(|s| s.addr <= addr);
        i.checked_sub(1).map(|i| self.syms[i].name.as_str())
    }
}

/// Aggregates samples by function (or by address when there are no symbols); most samples first.
pub fn by_function(samples: &[Samples], symbols: Option<&SymbolTable>) -> Vec<(String, u64)> {
    let mut agg: HashMap<String, u64> = HashMap::new();
    for (rip, n) in samples.iter().flatten() {
        let name = match symbols.and_then(|s| s.lookup(*rip)) {
            Some(name) => name.to_string(),
            None if *rip < 0x8000_0000_0000_0000 => "[user space or unmapped]".to_string(),
            None => format!("{rip:#x}"),
        };
        *agg.entry(name).or_default() += n;
    }
    let mut v: Vec<_> = agg.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// Renders the top `n` functions with percentages.
pub fn render(rows: &[(String, u64)], n: usize) -> String {
    let total: u64 = rows.iter().map(|r| r.1).sum();
    let mut out = format!("guest profile: {total} samples\n");
    for (name, count) in rows.iter().take(n) {
        let pct = if total == 0 {
            0.0
        } else {
            *count as f64 * 100.0 / total as f64
        };
        out.push_str(&format!("{pct:6.2}% {count:>8}  {name}\n"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    /// A minimal ELF64 with a .symtab (3 symbols) and its .strtab.
    fn tiny_elf() -> Vec<u8> {
        let strtab = b"\0alpha\0beta\0data_obj\0".to_vec();
        let mut symtab = vec![0u8; 24]; // null symbol
        for (name, info, value) in [(1u32, 2u8, 0x1000u64), (7, 0, 0x2000), (12, 1, 0x1800)] {
            let mut e = vec![0u8; 24];
            e[0..4].copy_from_slice(&name.to_le_bytes());
            e[4] = info;
            e[8..16].copy_from_slice(&value.to_le_bytes());
            symtab.extend(e);
        }
        let mut b = vec![0u8; 64];
        b[..5].copy_from_slice(b"\x7fELF\x02");
        let symoff = b.len();
        b.extend(&symtab);
        let stroff = b.len();
        b.extend(&strtab);
        let shoff = b.len();
        b[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        let mut sh = |ty: u32, off: usize, size: usize, link: u32| {
            let mut s = vec![0u8; 64];
            s[4..8].copy_from_slice(&ty.to_le_bytes());
            s[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            s[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            s[0x28..0x2c].copy_from_slice(&link.to_le_bytes());
            b.extend(s);
        };
        sh(0, 0, 0, 0);
        sh(2, symoff, symtab.len(), 2);
        sh(3, stroff, strtab.len(), 0);
        b
    }

    #[test]
    fn symbols_resolve_to_containing_function() {
        let t = SymbolTable::parse(&tiny_elf()).unwrap();
        assert_eq!(t.lookup(0x0fff), None);
        assert_eq!(t.lookup(0x1000), Some("alpha"));
        assert_eq!(t.lookup(0x1fff), Some("alpha"), "data objects are not functions");
        assert_eq!(t.lookup(0x2345), Some("beta"));
        assert!(SymbolTable::parse(b"not an elf").is_none());
        let mut broken = tiny_elf();
        broken.truncate(100);
        assert!(SymbolTable::parse(&broken).is_none());
    }

    #[test]
    fn samples_aggregate_by_function() {
        let t = SymbolTable::parse(&tiny_elf()).unwrap();
        let a: Samples = [(0x1004, 3), (0x1008, 2), (0x2000, 1)].into_iter().collect();
        let b: Samples = [(0x2001, 4), (0x10, 1)].into_iter().collect();
        let rows = by_function(&[a, b], Some(&t));
        assert_eq!(rows[0], ("alpha".to_string(), 5));
        assert_eq!(rows[1], ("beta".to_string(), 5));
        assert_eq!(rows[2].1, 1);
        let text = render(&rows, 2);
        assert!(text.starts_with("guest profile: 11 samples"));
        assert_eq!(text.lines().count(), 3);
    }
}

//! The few ACPI Machine Language encodings hearth's DSDT needs (ACPI 6.5 §20.2 "AML Grammar
//! Definition"): package lengths, names, integers, strings, packages, buffers, Scope, Device,
//! Name, Method, If/LEqual, Notify, and the Extended Interrupt resource descriptor (§6.4.3.6).
//! Written by hand: the only crate doing this (acpi_tables) carries a full AML object model we
//! do not need for six objects; this is ~150 lines with byte-exact tests.

/// `Arg0` (§20.2.6.1).
pub const ARG0: &[u8] = &[0x68];

#[allow(clippy::cast_possible_truncation)] // masked to 8 bits
/// PkgLength (§20.2.4): the length of `body` plus the PkgLength bytes themselves, in 1-4 bytes.
pub fn pkg_length(body_len: usize) -> Vec<u8> {
    // One byte holds up to 63; otherwise the lead byte carries the byte count in bits 6-7 and
    // the low nibble, and each following byte 8 more bits.
    if body_len < 63 {
        return vec![u8::try_from(body_len + 1).unwrap_or(0)];
    }
    let (extra, total) = if body_len + 2 < 1 << 12 {
        (1u8, body_len + 2)
    } else if body_len + 3 < 1 << 20 {
        (2, body_len + 3)
    } else {
        (3, body_len + 4)
    };
    let mut out = vec![(extra << 6) | (total & 0xf) as u8];
    for i in 0..usize::from(extra) {
        out.push(((total >> (4 + 8 * i)) & 0xff) as u8);
    }
    out
}

/// A NameString (§20.2.2): `\` for the root, then 4-character segments separated by `.`
/// (shorter segments are padded with `_`), with the dual/multi-name prefixes as needed.
pub fn name(path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let rel = match path.strip_prefix('\\') {
        Some(rest) => {
            out.push(b'\\');
            rest
        }
        None => path,
    };
    let segs: Vec<&str> = rel.split('.').filter(|s| !s.is_empty()).collect();
    match segs.len() {
        0 => out.push(0x00), // NullName
        1 => {}
        2 => out.push(0x2e),                                                     // DualNamePrefix
        n => out.extend_from_slice(&[0x2f, u8::try_from(n).unwrap_or(u8::MAX)]), // MultiNamePrefix
    }
    for s in segs {
        let mut seg = [b'_'; 4];
        for (d, b) in seg.iter_mut().zip(s.bytes()) {
            *d = b;
        }
        out.extend_from_slice(&seg);
    }
    out
}

#[allow(clippy::cast_possible_truncation)] // each arm checked the range
/// An integer in its shortest encoding: ZeroOp, OneOp, or Byte/Word/DWord/QWord prefix.
pub fn int(v: u64) -> Vec<u8> {
    match v {
        0 => vec![0x00],
        1 => vec![0x01],
        _ if v <= 0xff => vec![0x0a, v as u8],
        _ if v <= 0xffff => [&[0x0b][..], &(v as u16).to_le_bytes()].concat(),
        _ if v <= 0xffff_ffff => [&[0x0c][..], &(v as u32).to_le_bytes()].concat(),
        _ => [&[0x0e][..], &v.to_le_bytes()].concat(),
    }
}

/// A String object: StringPrefix, ASCII bytes, NUL.
pub fn string(s: &str) -> Vec<u8> {
    [&[0x0d][..], s.as_bytes(), &[0x00]].concat()
}

fn with_pkg(op: &[u8], body: &[u8]) -> Vec<u8> {
    [op, &pkg_length(body.len()), body].concat()
}

/// `Package (n) { elements }`.
pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![u8::try_from(elements.len()).unwrap_or(u8::MAX)];
    body.extend(elements.concat());
    with_pkg(&[0x12], &body)
}

/// `Buffer () { bytes }`.
pub fn buffer(bytes: &[u8]) -> Vec<u8> {
    let body = [&int(bytes.len() as u64)[..], bytes].concat();
    with_pkg(&[0x11], &body)
}

/// `Name (path, object)`.
pub fn name_obj(path: &str, object: &[u8]) -> Vec<u8> {
    [&[0x08][..], &name(path), object].concat()
}

/// `Scope (path) { terms }`.
pub fn scope(path: &str, terms: &[Vec<u8>]) -> Vec<u8> {
    with_pkg(&[0x10], &[name(path), terms.concat()].concat())
}

/// `Device (path) { terms }`.
pub fn device(path: &str, terms: &[Vec<u8>]) -> Vec<u8> {
    with_pkg(&[0x5b, 0x82], &[name(path), terms.concat()].concat())
}

/// `Method (path, args, NotSerialized) { terms }`.
pub fn method(path: &str, args: u8, terms: &[Vec<u8>]) -> Vec<u8> {
    with_pkg(&[0x14], &[name(path), vec![args & 0x7], terms.concat()].concat())
}

/// `If (predicate) { terms }`.
pub fn if_(predicate: &[u8], terms: &[Vec<u8>]) -> Vec<u8> {
    with_pkg(&[0xa0], &[predicate.to_vec(), terms.concat()].concat())
}

/// `LEqual (a, b)`.
pub fn lequal(a: &[u8], b: &[u8]) -> Vec<u8> {
    [&[0x93][..], a, b].concat()
}

/// `Notify (path, value)`.
pub fn notify(path: &str, value: u64) -> Vec<u8> {
    [&[0x86][..], &name(path), &int(value)].concat()
}

/// `ResourceTemplate () { Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi } }`:
/// one Extended Interrupt descriptor (§6.4.3.6) and the End Tag (§6.4.2.9, checksum 0 = none).
pub fn edge_interrupt_resource(gsi: u32) -> Vec<u8> {
    const CONSUMER: u8 = 1 << 0;
    const EDGE: u8 = 1 << 1;
    let mut r = vec![0x89, 6, 0, CONSUMER | EDGE, 1];
    r.extend_from_slice(&gsi.to_le_bytes());
    r.extend_from_slice(&[0x79, 0x00]);
    buffer(&r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkg_length_boundaries() {
        assert_eq!(pkg_length(0), [0x01]);
        assert_eq!(pkg_length(62), [0x3f]);
        // 63 body bytes + 2 length bytes = 65 = 0x41: lead 0x40 | 0x1, then 0x41 >> 4.
        assert_eq!(pkg_length(63), [0x41, 0x04]);
        // 4093 + 2 = 4095 = 0xfff still fits two bytes; 4094 + 3 = 0x1001 needs three.
        assert_eq!(pkg_length(4093), [0x4f, 0xff]);
        assert_eq!(pkg_length(4094), [0x81, 0x00, 0x01]);
    }

    #[test]
    fn names() {
        assert_eq!(name("VGEN"), b"VGEN");
        assert_eq!(name("_SB"), b"_SB_");
        assert_eq!(name("\\_SB_"), b"\\_SB_");
        assert_eq!(name("\\_SB_.VGEN"), b"\\\x2e_SB_VGEN");
        assert_eq!(name("\\_SB_.PCI0.S08"), b"\\\x2f\x03_SB_PCI0S08_");
        assert_eq!(name(""), [0x00]);
    }

    #[test]
    fn integers_use_the_shortest_prefix() {
        assert_eq!(int(0), [0x00]);
        assert_eq!(int(1), [0x01]);
        assert_eq!(int(0x80), [0x0a, 0x80]);
        assert_eq!(int(0x1234), [0x0b, 0x34, 0x12]);
        assert_eq!(int(0x000e_f000), [0x0c, 0x00, 0xf0, 0x0e, 0x00]);
        assert_eq!(int(1 << 32), [0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn objects() {
        assert_eq!(string("AB"), [0x0d, b'A', b'B', 0]);
        // Package (2) { 0x10, One }: PackageOp, PkgLength 5, count 2, elements.
        assert_eq!(package(&[int(0x10), int(1)]), [0x12, 0x05, 0x02, 0x0a, 0x10, 0x01]);
        assert_eq!(name_obj("_UID", &int(0)), [0x08, b'_', b'U', b'I', b'D', 0x00]);
        assert_eq!(device("GED0", &[]), [0x5b, 0x82, 0x05, b'G', b'E', b'D', b'0']);
        assert_eq!(method("_EVT", 1, &[]), [0x14, 0x06, b'_', b'E', b'V', b'T', 0x01]);
        assert_eq!(
            if_(&lequal(ARG0, &int(0x17)), &[notify("VGEN", 0x80)]),
            [0xa0, 0x0c, 0x93, 0x68, 0x0a, 0x17, 0x86, b'V', b'G', b'E', b'N', 0x0a, 0x80]
        );
    }

    #[test]
    fn interrupt_resource_template() {
        assert_eq!(
            edge_interrupt_resource(23),
            [0x11, 0x0e, 0x0a, 0x0b, 0x89, 0x06, 0x00, 0x03, 0x01, 23, 0, 0, 0, 0x79, 0x00]
        );
    }
}

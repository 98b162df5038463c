//! The CPUID a guest saw, kept in snapshots: saved per vCPU, given back to the restored vCPU
//! (a guest chose its code paths from it at boot), and checked against what this host's KVM
//! offers, so a snapshot whose guest relies on a CPU feature this host lacks is refused with the
//! features named instead of crashing the guest on its first AVX-512 instruction.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};
use serde::{Deserialize, Serialize};

/// One CPUID leaf/subleaf as KVM holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

impl From<&kvm_cpuid_entry2> for CpuidEntry {
    fn from(e: &kvm_cpuid_entry2) -> Self {
        Self {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        }
    }
}

impl From<&CpuidEntry> for kvm_cpuid_entry2 {
    fn from(e: &CpuidEntry) -> Self {
        Self {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
            ..Default::default()
        }
    }
}

pub fn entries(cpuid: &CpuId) -> Vec<CpuidEntry> {
    cpuid.as_slice().iter().map(CpuidEntry::from).collect()
}

/// Builds KVM's CPUID list from saved entries (`None` if there are more than KVM takes).
pub fn to_kvm(entries: &[CpuidEntry]) -> Option<CpuId> {
    let raw: Vec<kvm_cpuid_entry2> = entries.iter().map(kvm_cpuid_entry2::from).collect();
    CpuId::from_entries(&raw).ok()
}

#[derive(Clone, Copy)]
enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

impl Reg {
    fn name(self) -> &'static str {
        match self {
            Reg::Eax => "EAX",
            Reg::Ebx => "EBX",
            Reg::Ecx => "ECX",
            Reg::Edx => "EDX",
        }
    }

    fn of(self, e: &CpuidEntry) -> u32 {
        match self {
            Reg::Eax => e.eax,
            Reg::Ebx => e.ebx,
            Reg::Ecx => e.ecx,
            Reg::Edx => e.edx,
        }
    }
}

/// The registers that are feature bitmaps, with the bits KVM changes at run time (so a saved
/// value differs from the supported list without the host lacking anything) masked out.
const FEATURE_WORDS: &[(u32, u32, Reg, u32)] = &[
    // Leaf 1: ECX bit 27 OSXSAVE follows CR4; EDX bit 9 APIC follows the APIC base MSR.
    (1, 0, Reg::Ecx, !(1 << 27)),
    (1, 0, Reg::Edx, !(1 << 9)),
    (7, 0, Reg::Ebx, !0),
    // Leaf 7 ECX bit 4 OSPKE follows CR4.
    (7, 0, Reg::Ecx, !(1 << 4)),
    (7, 0, Reg::Edx, !0),
    (7, 1, Reg::Eax, !0),
    // XSAVE state components the guest may enable in XCR0, and XSAVE instructions.
    (0xd, 0, Reg::Eax, !0),
    (0xd, 1, Reg::Eax, !0),
    (0x8000_0001, 0, Reg::Ecx, !0),
    (0x8000_0001, 0, Reg::Edx, !0),
    (0x8000_0008, 0, Reg::Ebx, !0),
    // KVM paravirtual features (kvm-clock, async PF, PV EOI, ...).
    (0x4000_0001, 0, Reg::Eax, !0),
];

/// Names of well-known feature bits, for the error message; others are shown by number.
const NAMES: &[(u32, u32, u8, u8, &str)] = &[
    (1, 0, 2, 0, "sse3"),
    (1, 0, 2, 9, "ssse3"),
    (1, 0, 2, 12, "fma"),
    (1, 0, 2, 19, "sse4_1"),
    (1, 0, 2, 20, "sse4_2"),
    (1, 0, 2, 22, "movbe"),
    (1, 0, 2, 23, "popcnt"),
    (1, 0, 2, 25, "aes"),
    (1, 0, 2, 26, "xsave"),
    (1, 0, 2, 28, "avx"),
    (1, 0, 2, 29, "f16c"),
    (1, 0, 2, 30, "rdrand"),
    (7, 0, 1, 3, "bmi1"),
    (7, 0, 1, 5, "avx2"),
    (7, 0, 1, 8, "bmi2"),
    (7, 0, 1, 9, "erms"),
    (7, 0, 1, 16, "avx512f"),
    (7, 0, 1, 18, "rdseed"),
    (7, 0, 1, 19, "adx"),
    (7, 0, 1, 20, "smap"),
    (7, 0, 1, 29, "sha_ni"),
    (7, 0, 2, 1, "avx512vbmi"),
    (7, 0, 2, 9, "vaes"),
    (7, 0, 2, 10, "vpclmulqdq"),
    (0x8000_0001, 0, 2, 5, "abm"),
    (0x8000_0001, 0, 3, 27, "rdtscp"),
    (0x8000_0001, 0, 3, 26, "pdpe1gb"),
];

fn find(entries: &[CpuidEntry], function: u32, index: u32) -> Option<&CpuidEntry> {
    // Leaves without subleaves are stored with index 0.
    entries.iter().find(|e| e.function == function && e.index == index)
}

fn bit_name(function: u32, index: u32, reg: Reg, bit: u32) -> String {
    let regno = reg as u8;
    NAMES
        .iter()
        .find(|&&(f, i, r, b, _)| f == function && i == index && r == regno && u32::from(b) == bit)
        .map_or_else(
            || format!("CPUID.{function:#x}.{index}:{}[{bit}]", reg.name()),
            |&(_, _, _, _, n)| n.to_string(),
        )
}

/// The features `saved` (a vCPU's CPUID from a snapshot) has that `here` (what this host's KVM
/// offers the same vCPU) lacks, by name; empty if the snapshot can run here.
pub fn missing(saved: &[CpuidEntry], here: &[CpuidEntry]) -> Vec<String> {
    let mut out = Vec::new();
    for &(function, index, reg, mask) in FEATURE_WORDS {
        let Some(s) = find(saved, function, index) else {
            continue;
        };
        let have = find(here, function, index).map_or(0, |h| reg.of(h));
        let lacking = reg.of(s) & mask & !have;
        for bit in 0..32 {
            if lacking & (1 << bit) != 0 {
                out.push(bit_name(function, index, reg, bit));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32, ebx: u32, ecx: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            flags: 0,
            eax: 0,
            ebx,
            ecx,
            edx: 0,
        }
    }

    #[test]
    fn a_subset_is_accepted_and_extra_bits_are_named() {
        let here = vec![leaf(7, 0, 1 << 5 | 1 << 3, 0), leaf(1, 0, 0, 1 << 23)];
        assert!(missing(&[leaf(7, 0, 1 << 5, 0)], &here).is_empty());
        let saved = vec![
            leaf(7, 0, 1 << 5 | 1 << 16 | 1 << 31, 0),
            leaf(1, 0, 0, 1 << 23 | 1 << 28),
        ];
        assert_eq!(
            missing(&saved, &here),
            vec!["avx", "avx512f", "CPUID.0x7.0:EBX[31]"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn run_time_bits_and_absent_leaves() {
        // OSXSAVE is set by the guest's CR4, not offered by the host: never "missing".
        let here = vec![leaf(1, 0, 0, 1 << 26)];
        assert!(missing(&[leaf(1, 0, 0, 1 << 26 | 1 << 27)], &here).is_empty());
        // A leaf the host lacks entirely: every saved feature bit in it is missing.
        assert_eq!(missing(&[leaf(7, 0, 1 << 8, 0)], &here), vec!["bmi2".to_string()]);
        // Leaves that are not feature words are not compared.
        assert!(missing(&[leaf(0x8000_0005, 0, !0, !0)], &[]).is_empty());
    }

    #[test]
    fn round_trips_through_kvm_entries() {
        let e = CpuidEntry {
            function: 0xd,
            index: 1,
            flags: 1,
            eax: 1,
            ebx: 2,
            ecx: 3,
            edx: 4,
        };
        let kvm = to_kvm(&[e]).unwrap();
        assert_eq!(entries(&kvm), vec![e]);
    }
}

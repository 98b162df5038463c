//! Intel MultiProcessor Specification 1.4 table: how an ACPI-less guest learns its CPUs, its
//! IOAPIC and how ISA interrupts are wired (MP spec chapter 4). The floating pointer sits in
//! the last KiB below 640 KiB, where Linux's `smp_scan_config()` looks for it; it points at
//! the configuration table just below it, in a range the e820 map reserves.

use vm_memory::{Bytes, GuestAddress};

use super::layout::{IOAPIC_ADDR, IOAPIC_PINS, LAPIC_ADDR, MP_CONFIG_ADDR, MP_FLOATING_ADDR};
use crate::vstate::memory::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    #[error("{0} vCPUs do not fit an MP table (at most 254)")]
    TooManyCpus(u8),
    #[error("MP table of {0} bytes does not fit below 640 KiB")]
    TooBig(usize),
    #[error("cannot write the MP table to guest memory")]
    Write,
}

// The MP table holds 32-bit addresses; these fit by construction (all below 4 GiB).
#[allow(clippy::cast_possible_truncation)]
const IOAPIC_ADDR32: u32 = IOAPIC_ADDR as u32;
#[allow(clippy::cast_possible_truncation)]
const LAPIC_ADDR32: u32 = LAPIC_ADDR as u32;
#[allow(clippy::cast_possible_truncation)]
const MP_CONFIG_ADDR32: u32 = MP_CONFIG_ADDR as u32;
#[allow(clippy::cast_possible_truncation)]
const IOAPIC_PINS8: u8 = IOAPIC_PINS as u8;
const _: () = assert!(LAPIC_ADDR < 1 << 32 && IOAPIC_PINS < 256);

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOT: u8 = 2;

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)).wrapping_neg()
}

/// Builds the floating pointer structure (pointing at `table_addr`) and the configuration
/// table, for `ncpus` CPUs with APIC IDs 0..ncpus and one IOAPIC (ID `ncpus`).
pub fn build(ncpus: u8, table_addr: u32) -> Result<(Vec<u8>, Vec<u8>), MpTableError> {
    if ncpus == 0 || ncpus > 254 {
        return Err(MpTableError::TooManyCpus(ncpus));
    }
    let ioapic_id = ncpus;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..ncpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOT } else { 0 };
        entries.extend_from_slice(&[0, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&0x600u32.to_le_bytes()); // signature: family 6
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // features: FPU, APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0]); // bus 0
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR32.to_le_bytes());
    count += 1;
    for pin in 0..IOAPIC_PINS8 {
        // type 3 (I/O interrupt), INT, conforming polarity/trigger, ISA bus IRQ `pin` → IOAPIC pin.
        entries.extend_from_slice(&[3, 0, 0, 0, 0, pin, ioapic_id, pin]);
        count += 1;
    }
    // type 4 (local interrupt): ExtINT on LINT0, NMI on LINT1, to all local APICs.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    let len = u16::try_from(44 + entries.len()).map_err(|_| MpTableError::TooBig(44 + entries.len()))?;
    table.extend_from_slice(&len.to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"HEARTH  ");
    table.extend_from_slice(b"microVM     ");
    table.extend_from_slice(&[0; 4]); // OEM table pointer
    table.extend_from_slice(&[0; 2]); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR32.to_le_bytes());
    table.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(16 + table.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&table_addr.to_le_bytes());
    out.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length (16-byte units), rev, checksum, features
    out[10] = checksum(&out);
    Ok((out, table))
}

/// Writes the MP table for `ncpus` vCPUs.
pub fn write(mem: &GuestMemory, ncpus: u8) -> Result<(), MpTableError> {
    let (fp, table) = build(ncpus, MP_CONFIG_ADDR32)?;
    if MP_CONFIG_ADDR + table.len() as u64 > MP_FLOATING_ADDR {
        return Err(MpTableError::TooBig(table.len()));
    }
    mem.write_slice(&table, GuestAddress(MP_CONFIG_ADDR))
        .map_err(|_| MpTableError::Write)?;
    mem.write_slice(&fp, GuestAddress(MP_FLOATING_ADDR))
        .map_err(|_| MpTableError::Write)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_counts_are_valid() {
        for n in [1u8, 2, 8, 254] {
            let (fp, table) = build(n, 0x9e000).unwrap();
            assert_eq!(&fp[0..4], b"_MP_");
            assert_eq!(fp.len(), 16);
            assert_eq!(sum(&fp), 0, "floating pointer checksum");
            assert_eq!(u32::from_le_bytes(fp[4..8].try_into().unwrap()), 0x9e000);
            let table = &table[..];
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0, "config table checksum");
            let count = u16::from_le_bytes([table[34], table[35]]);
            assert_eq!(count as usize, n as usize + 2 + 24 + 2);
            // First CPU entry is the enabled BSP, APIC IDs are sequential.
            assert_eq!(&table[44..48], &[0, 0, APIC_VERSION, 3]);
            if n > 1 {
                assert_eq!(&table[64..68], &[0, 1, APIC_VERSION, 1]);
            }
        }
        assert!(build(0, 0).is_err());
        assert!(build(255, 0).is_err());
    }

    #[test]
    fn fits_below_the_floating_pointer_for_max_cpus() {
        let (_, table) = build(254, 0).unwrap();
        assert!(MP_CONFIG_ADDR as usize + table.len() <= MP_FLOATING_ADDR as usize);
    }
}

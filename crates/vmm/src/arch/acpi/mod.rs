//! ACPI for hearth guests: the tables (RSDP, XSDT, FADT, MADT, DSDT) in the reserved BIOS
//! area below 1 MiB, and the VM generation ID they describe. The guest finds the RSDP through
//! the boot protocol (zero page `acpi_rsdp_addr`, PVH `rsdp_paddr`) or by scanning
//! 0xe0000-0xfffff. A restored snapshot (every clone) gets a new generation ID and a Generic
//! Event Device interrupt, so Linux's vmgenid driver reseeds the guest's RNG. Not here: wiring
//! the GED interrupt (builder.rs) and carrying [`AcpiState`] in snapshots (persist.rs).

pub mod aml;
pub mod tables;

use std::io::Read;

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress};

use devices::legacy::acpi_pm;

use super::layout::{ACPI_TABLES_END, ACPI_TABLES_START, GED_GSI, IOAPIC_ADDR, LAPIC_ADDR, SCI_GSI, VMGENID_ADDR};
use crate::vstate::memory::GuestMemory;

/// Size of the VM generation ID (a 128-bit integer, Microsoft's "Virtual Machine Generation ID").
pub const GENERATION_ID_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("ACPI tables of {0} bytes do not fit the reserved area 0xe0000-0xef000")]
    TooBig(u64),
    #[error("cannot write the ACPI {what} at guest address {addr:#x}")]
    Write { what: &'static str, addr: u64 },
    #[error("cannot read random bytes for the VM generation ID from /dev/urandom")]
    Random(#[source] std::io::Error),
}

/// What a running guest's ACPI setup needs kept across a snapshot: where the generation ID
/// lives and which GSI notifies the guest of a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcpiState {
    pub generation_id_addr: u64,
    pub ged_gsi: u32,
}

// The tables hold 32-bit APIC addresses; both are below 4 GiB by construction.
#[allow(clippy::cast_possible_truncation)]
const LAPIC_ADDR32: u32 = LAPIC_ADDR as u32;
#[allow(clippy::cast_possible_truncation)]
const IOAPIC_ADDR32: u32 = IOAPIC_ADDR as u32;
const _: () = assert!(LAPIC_ADDR < 1 << 32 && IOAPIC_ADDR < 1 << 32);

/// The PM1a registers (devices::legacy::AcpiPm, on the port bus) and the SCI, for the FADT.
#[allow(clippy::cast_possible_truncation)] // constants checked below
const PM: tables::PmConfig = tables::PmConfig {
    sci_gsi: SCI_GSI as u16,
    pm1a_evt_port: acpi_pm::PM_PORT as u16,
    pm1_evt_len: acpi_pm::PM1_EVT_LEN,
    pm1a_cnt_port: (acpi_pm::PM_PORT + acpi_pm::PM1_CNT_OFFSET) as u16,
    pm1_cnt_len: acpi_pm::PM1_CNT_LEN,
};
const _: () = assert!(SCI_GSI < 1 << 16 && acpi_pm::PM_PORT + acpi_pm::PM_LEN <= 1 << 16);
#[allow(clippy::cast_possible_truncation)]
const S5_SLP_TYP: u8 = acpi_pm::SLP_TYP_S5 as u8;

/// Lays out the tables from `ACPI_TABLES_START`: RSDP first (16-byte aligned, inside the
/// range Linux scans), then XSDT, FADT, MADT, DSDT, each 16-byte aligned.
/// Returns (address, bytes) pairs.
pub fn build(vcpus: u8, state: AcpiState) -> Result<Vec<(u64, Vec<u8>)>, AcpiError> {
    let align = |a: u64| (a + 15) & !15;
    let xsdt_addr = ACPI_TABLES_START + 64;
    let dsdt = tables::dsdt(tables::DsdtConfig {
        generation_id_addr: state.generation_id_addr,
        ged_gsi: state.ged_gsi,
        s5_slp_typ: S5_SLP_TYP,
    });
    let madt = tables::madt(vcpus, LAPIC_ADDR32, IOAPIC_ADDR32);
    // The XSDT has two entries (FADT, MADT): its size is known before the addresses are.
    let fadt_addr = align(xsdt_addr + 36 + 16);
    let madt_addr = align(fadt_addr + tables::FADT_LEN as u64);
    let dsdt_addr = align(madt_addr + madt.len() as u64);
    let end = dsdt_addr + dsdt.len() as u64;
    if end > ACPI_TABLES_END {
        return Err(AcpiError::TooBig(end - ACPI_TABLES_START));
    }
    Ok(vec![
        (ACPI_TABLES_START, tables::rsdp(xsdt_addr)),
        (xsdt_addr, tables::xsdt(&[fadt_addr, madt_addr])),
        (fadt_addr, tables::fadt(dsdt_addr, PM)),
        (madt_addr, madt),
        (dsdt_addr, dsdt),
    ])
}

/// Writes the tables for `vcpus` vCPUs and a fresh generation ID; returns what a snapshot keeps.
pub fn write(mem: &GuestMemory, vcpus: u8) -> Result<AcpiState, AcpiError> {
    let state = AcpiState {
        generation_id_addr: VMGENID_ADDR,
        ged_gsi: GED_GSI,
    };
    for (addr, bytes) in build(vcpus, state)? {
        mem.write_slice(&bytes, GuestAddress(addr))
            .map_err(|_| AcpiError::Write { what: "tables", addr })?;
    }
    new_generation_id(mem, &state)?;
    Ok(state)
}

/// Writes a new random generation ID into guest memory (at boot, and when a snapshot is
/// restored: the guest learns of it from the GED interrupt) and returns it.
pub fn new_generation_id(mem: &GuestMemory, state: &AcpiState) -> Result<[u8; GENERATION_ID_LEN], AcpiError> {
    let mut id = [0u8; GENERATION_ID_LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut id))
        .map_err(AcpiError::Random)?;
    let addr = state.generation_id_addr;
    mem.write_slice(&id, GuestAddress(addr)).map_err(|_| AcpiError::Write {
        what: "generation ID",
        addr,
    })?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
    }

    #[test]
    fn tables_are_linked_rsdp_to_dsdt_in_guest_memory() {
        let m = mem();
        let st = write(&m, 2).unwrap();
        let r64 = |a: u64| m.read_obj::<u64>(GuestAddress(a)).unwrap();
        let sig = |a: u64| {
            let mut s = [0u8; 4];
            m.read_slice(&mut s, GuestAddress(a)).unwrap();
            s
        };
        let mut rsdp = [0u8; 8];
        m.read_slice(&mut rsdp, GuestAddress(ACPI_TABLES_START)).unwrap();
        assert_eq!(&rsdp, b"RSD PTR ");
        assert_eq!(ACPI_TABLES_START % 16, 0);
        let xsdt = r64(ACPI_TABLES_START + 24);
        assert_eq!(&sig(xsdt), b"XSDT");
        let fadt = r64(xsdt + 36);
        let madt = r64(xsdt + 44);
        assert_eq!(&sig(fadt), b"FACP");
        assert_eq!(&sig(madt), b"APIC");
        let dsdt = r64(fadt + tables::FADT_X_DSDT as u64);
        assert_eq!(&sig(dsdt), b"DSDT");
        assert!(st.generation_id_addr >= ACPI_TABLES_END);
        assert!(st.generation_id_addr + GENERATION_ID_LEN as u64 <= super::super::layout::LOW_BIOS_END);
    }

    #[test]
    fn each_generation_id_is_new() {
        let m = mem();
        let st = write(&m, 1).unwrap();
        let mut first = [0u8; 16];
        m.read_slice(&mut first, GuestAddress(st.generation_id_addr)).unwrap();
        assert_ne!(first, [0u8; 16]);
        let second = new_generation_id(&m, &st).unwrap();
        assert_ne!(first, second);
        let mut now = [0u8; 16];
        m.read_slice(&mut now, GuestAddress(st.generation_id_addr)).unwrap();
        assert_eq!(now, second);
    }

    #[test]
    fn max_vcpus_fit() {
        let st = AcpiState {
            generation_id_addr: VMGENID_ADDR,
            ged_gsi: GED_GSI,
        };
        let t = build(254, st).unwrap();
        let (addr, last) = t.last().unwrap();
        assert!(addr + last.len() as u64 <= ACPI_TABLES_END);
    }
}

//! The ACPI tables hearth gives a guest (ACPI 6.5 chapter 5): RSDP → XSDT → {FADT → DSDT, MADT}.
//! Each builder returns the table's bytes with its length and checksum filled in; where the
//! tables go in guest memory is `super`'s business.

use super::aml;

const OEM_ID: &[u8; 6] = b"HEARTH";
const OEM_TABLE_ID: &[u8; 8] = b"MICROVM ";
const CREATOR_ID: &[u8; 4] = b"HRTH";
const HEADER_LEN: usize = 36;

/// The byte that makes `bytes` sum to zero (§5.2.5.3, §5.2.6).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)).wrapping_neg()
}

/// A System Description Table: the 36-byte header (§5.2.6) followed by `body`.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(HEADER_LEN + body.len()).unwrap_or(u32::MAX);
    let mut t = Vec::with_capacity(HEADER_LEN + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&len.to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(CREATOR_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// RSDP revision 2 (§5.2.5.3): no RSDT, only the 64-bit XSDT address.
pub fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(36);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0); // checksum of the first 20 bytes
    r.extend_from_slice(OEM_ID);
    r.push(2); // revision: ACPI 2.0+
    r.extend_from_slice(&0u32.to_le_bytes()); // RsdtAddress
    r.extend_from_slice(&36u32.to_le_bytes());
    r.extend_from_slice(&xsdt_addr.to_le_bytes());
    r.extend_from_slice(&[0; 4]); // extended checksum, reserved
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

/// XSDT (§5.2.8): the 64-bit addresses of the other tables (DSDT is found through the FADT).
pub fn xsdt(entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|a| a.to_le_bytes()).collect();
    sdt(b"XSDT", 1, &body)
}

/// FADT boot architecture flags (IAPC_BOOT_ARCH, §5.2.9.3).
pub const IAPC_8042: u16 = 1 << 1;
pub const IAPC_NO_VGA: u16 = 1 << 2;
pub const IAPC_NO_CMOS_RTC: u16 = 1 << 5;
/// FADT fixed feature flags (§5.2.9, Table 5.10).
const FADT_PWR_BUTTON: u32 = 1 << 4; // no fixed-feature power button
const FADT_SLP_BUTTON: u32 = 1 << 5; // no fixed-feature sleep button
pub const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// Offsets in the FADT (§5.2.9, Table 5.9).
pub const FADT_LEN: usize = 276;
pub const FADT_IAPC_BOOT_ARCH: usize = 109;
pub const FADT_FLAGS: usize = 112;
pub const FADT_X_DSDT: usize = 140;

/// FADT revision 6.5 for the hardware-reduced ACPI model (§4.1): no PM1/GPE blocks, no SCI,
/// no PM timer. The i8042 is declared present so Linux still probes the keyboard controller
/// (arch/x86/kernel/acpi/boot.c `acpi_parse_fadt` marks it absent otherwise); there is no
/// CMOS RTC and no VGA in a hearth guest.
pub fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut body = vec![0u8; FADT_LEN - HEADER_LEN];
    let at = |off: usize| off - HEADER_LEN;
    let boot_arch = IAPC_8042 | IAPC_NO_VGA | IAPC_NO_CMOS_RTC;
    body[at(FADT_IAPC_BOOT_ARCH)..at(FADT_IAPC_BOOT_ARCH) + 2].copy_from_slice(&boot_arch.to_le_bytes());
    let flags = FADT_HW_REDUCED_ACPI | FADT_PWR_BUTTON | FADT_SLP_BUTTON;
    body[at(FADT_FLAGS)..at(FADT_FLAGS) + 4].copy_from_slice(&flags.to_le_bytes());
    body[at(131)] = 5; // FADT minor version: 6.5
    body[at(FADT_X_DSDT)..at(FADT_X_DSDT) + 8].copy_from_slice(&dsdt_addr.to_le_bytes());
    body[at(268)..at(276)].copy_from_slice(b"HEARTHVM"); // hypervisor vendor identity
    sdt(b"FACP", 6, &body)
}

/// MADT (§5.2.12): one enabled local APIC per vCPU (APIC IDs 0..n), the IOAPIC (ID `vcpus`,
/// as in the MP table) with its GSIs from 0, identity interrupt source overrides for ISA IRQs
/// 0-15 (so Linux wires them to IOAPIC pins like the MP table does; without them a
/// hardware-reduced guest has no legacy IRQs), and LINT1 as NMI on every CPU.
pub fn madt(vcpus: u8, lapic_addr: u32, ioapic_addr: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&lapic_addr.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // flags: no dual 8259 (PCAT_COMPAT clear)
    for id in 0..vcpus {
        body.extend_from_slice(&[0, 8, id, id]); // Processor Local APIC: UID, APIC ID
        body.extend_from_slice(&1u32.to_le_bytes()); // enabled
    }
    body.extend_from_slice(&[1, 12, vcpus, 0]); // I/O APIC
    body.extend_from_slice(&ioapic_addr.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    for irq in 0u8..16 {
        body.extend_from_slice(&[2, 10, 0, irq]); // Interrupt Source Override: ISA bus, IRQ
        body.extend_from_slice(&u32::from(irq).to_le_bytes()); // GSI
        body.extend_from_slice(&0u16.to_le_bytes()); // conforms to the bus: edge, active high
    }
    body.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]); // Local APIC NMI: all CPUs, LINT1
    sdt(b"APIC", 5, &body)
}

/// What the DSDT describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DsdtConfig {
    /// Guest-physical address of the 16-byte VM generation ID.
    pub generation_id_addr: u64,
    /// The GSI of the Generic Event Device.
    pub ged_gsi: u32,
}

/// DSDT (§5.2.11.1) with two devices under `\_SB`:
/// - `VGEN`, the VM generation ID device Linux's vmgenid driver binds to (_HID "VMGENCTR",
///   _CID "VM_GEN_COUNTER"; `ADDR` is a package of the ID's address, low then high 32 bits);
/// - `GED0`, a Generic Event Device (ACPI0013, §5.6.9) whose edge interrupt on `ged_gsi` runs
///   `_EVT`, which sends Notify(VGEN, 0x80): the guest re-reads the ID and reseeds its RNG.
pub fn dsdt(cfg: DsdtConfig) -> Vec<u8> {
    let addr = cfg.generation_id_addr;
    let vgen = aml::device(
        "VGEN",
        &[
            aml::name_obj("_HID", &aml::string("VMGENCTR")),
            aml::name_obj("_CID", &aml::string("VM_GEN_COUNTER")),
            aml::name_obj("_DDN", &aml::string("VM_Gen_Counter")),
            aml::name_obj(
                "ADDR",
                &aml::package(&[aml::int(addr & 0xffff_ffff), aml::int(addr >> 32)]),
            ),
        ],
    );
    let ged = aml::device(
        "GED0",
        &[
            aml::name_obj("_HID", &aml::string("ACPI0013")),
            aml::name_obj("_UID", &aml::int(0)),
            aml::name_obj("_CRS", &aml::edge_interrupt_resource(cfg.ged_gsi)),
            aml::method(
                "_EVT",
                1,
                &[aml::if_(
                    &aml::lequal(aml::ARG0, &aml::int(u64::from(cfg.ged_gsi))),
                    &[aml::notify("\\_SB_.VGEN", 0x80)],
                )],
            ),
        ],
    );
    sdt(b"DSDT", 2, &aml::scope("\\_SB_", &[vgen, ged]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }
    fn len_field(t: &[u8]) -> usize {
        u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as usize
    }

    #[test]
    fn rsdp_checksums_and_pointer() {
        let r = rsdp(0xe_0040);
        assert_eq!(r.len(), 36);
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!(sum(&r[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(&r), 0, "extended checksum");
        assert_eq!(r[15], 2);
        assert_eq!(u32::from_le_bytes(r[20..24].try_into().unwrap()), 36);
        assert_eq!(u64::from_le_bytes(r[24..32].try_into().unwrap()), 0xe_0040);
    }

    #[test]
    fn every_table_has_its_length_and_a_zero_sum() {
        let d = DsdtConfig {
            generation_id_addr: 0xe_f000,
            ged_gsi: 23,
        };
        for (sig, t) in [
            (b"XSDT", xsdt(&[0x1000, 0x2000])),
            (b"FACP", fadt(0x3000)),
            (b"APIC", madt(2, 0xfee0_0000, 0xfec0_0000)),
            (b"DSDT", dsdt(d)),
        ] {
            assert_eq!(&t[..4], sig);
            assert_eq!(len_field(&t), t.len(), "{}", String::from_utf8_lossy(sig));
            assert_eq!(sum(&t), 0, "{}", String::from_utf8_lossy(sig));
            assert_eq!(&t[10..16], OEM_ID);
        }
        assert_eq!(xsdt(&[0x1000, 0x2000]).len(), 36 + 16);
    }

    #[test]
    fn fadt_is_hardware_reduced_with_an_8042() {
        let f = fadt(0xe_0200);
        assert_eq!(f.len(), FADT_LEN);
        assert_eq!(f[8], 6, "revision");
        let flags = u32::from_le_bytes(f[FADT_FLAGS..FADT_FLAGS + 4].try_into().unwrap());
        assert_ne!(flags & FADT_HW_REDUCED_ACPI, 0);
        let arch = u16::from_le_bytes([f[FADT_IAPC_BOOT_ARCH], f[FADT_IAPC_BOOT_ARCH + 1]]);
        assert_ne!(arch & IAPC_8042, 0);
        assert_eq!(
            u64::from_le_bytes(f[FADT_X_DSDT..FADT_X_DSDT + 8].try_into().unwrap()),
            0xe_0200
        );
        // The 32-bit DSDT pointer stays 0: X_DSDT is used.
        assert_eq!(&f[40..44], &[0; 4]);
    }

    #[test]
    fn madt_lists_cpus_ioapic_and_overrides() {
        let m = madt(2, 0xfee0_0000, 0xfec0_0000);
        let body = &m[44..];
        assert_eq!(&body[..8], &[0, 8, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&body[8..16], &[0, 8, 1, 1, 1, 0, 0, 0]);
        assert_eq!(&body[16..28], &[1, 12, 2, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]);
        // 16 overrides of 10 bytes, then the 6-byte NMI entry.
        assert_eq!(body.len(), 16 + 12 + 16 * 10 + 6);
        assert_eq!(&body[28 + 5 * 10..28 + 6 * 10], &[2, 10, 0, 5, 5, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn dsdt_names_the_devices_and_the_id_address() {
        let d = dsdt(DsdtConfig {
            generation_id_addr: 0x1_2345_6000,
            ged_gsi: 23,
        });
        let aml = &d[36..];
        let has = |needle: &[u8]| aml.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"\x0dVMGENCTR\x00"));
        assert!(has(b"\x0dVM_GEN_COUNTER\x00"));
        assert!(has(b"\x0dACPI0013\x00"));
        // Name (ADDR, Package (2) { 0x23456000, One }).
        assert!(has(&[
            b'A', b'D', b'D', b'R', 0x12, 0x08, 0x02, 0x0c, 0x00, 0x60, 0x45, 0x23, 0x01
        ]));
        // Notify (\_SB_.VGEN, 0x80) inside the _EVT method.
        assert!(has(b"\x86\\\x2e_SB_VGEN\x0a\x80"));
        // The whole AML is one Scope (\_SB_) whose two-byte PkgLength covers the rest.
        assert_eq!(aml[0], 0x10);
        assert_eq!(&aml[1..3], &aml::pkg_length(aml.len() - 3)[..]);
    }
}

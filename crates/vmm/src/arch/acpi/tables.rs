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
const FADT_WBINVD: u32 = 1 << 0;
const FADT_PROC_C1: u32 = 1 << 2;
const FADT_PWR_BUTTON: u32 = 1 << 4; // no fixed-feature power button
const FADT_SLP_BUTTON: u32 = 1 << 5; // no fixed-feature sleep button
pub const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// Offsets in the FADT (§5.2.9, Table 5.9).
pub const FADT_LEN: usize = 276;
pub const FADT_SCI_INT: usize = 46;
pub const FADT_PM1A_EVT_BLK: usize = 56;
pub const FADT_PM1A_CNT_BLK: usize = 64;
pub const FADT_PM1_EVT_LEN: usize = 88;
pub const FADT_PM1_CNT_LEN: usize = 89;
pub const FADT_IAPC_BOOT_ARCH: usize = 109;
pub const FADT_FLAGS: usize = 112;
pub const FADT_X_DSDT: usize = 140;
pub const FADT_X_PM1A_EVT_BLK: usize = 148;
pub const FADT_X_PM1A_CNT_BLK: usize = 172;

/// Where the FADT's PM1a register blocks are (port I/O) and which GSI is the SCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmConfig {
    pub sci_gsi: u16,
    pub pm1a_evt_port: u16,
    pub pm1_evt_len: u8,
    pub pm1a_cnt_port: u16,
    pub pm1_cnt_len: u8,
}

/// A Generic Address Structure (§5.2.3.2) for `bits` bits of port I/O at `port`, accessed
/// in 16-bit words.
fn gas_io(port: u16, bits: u8) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // SystemIO
    g[1] = bits;
    g[3] = 2; // word access
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

/// FADT revision 6.5 (§5.2.9) for full ACPI mode, not hardware-reduced: the guest keeps its
/// legacy PIC, PIT and ISA interrupts (hardware-reduced Linux drops the PIC and then maps no
/// ISA IRQ it was not told about by the DSDT, so COM1, the i8042 and the virtio devices on
/// the command line would lose their interrupts). The fixed hardware is the minimum: the
/// PM1a event and control blocks (`pm`, so `poweroff` reaches S5) and an SCI line that never
/// fires; no SMI command port (always in ACPI mode), no PM timer, no GPE blocks. The i8042 is
/// declared present so Linux still probes the keyboard controller (arch/x86/kernel/acpi/boot.c
/// `acpi_parse_fadt` marks it absent otherwise); there is no CMOS RTC and no VGA.
pub fn fadt(dsdt_addr: u64, pm: PmConfig) -> Vec<u8> {
    let mut body = vec![0u8; FADT_LEN - HEADER_LEN];
    let mut put = |off: usize, bytes: &[u8]| {
        let at = off - HEADER_LEN;
        body[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(FADT_SCI_INT, &pm.sci_gsi.to_le_bytes());
    put(FADT_PM1A_EVT_BLK, &u32::from(pm.pm1a_evt_port).to_le_bytes());
    put(FADT_PM1A_CNT_BLK, &u32::from(pm.pm1a_cnt_port).to_le_bytes());
    put(FADT_PM1_EVT_LEN, &[pm.pm1_evt_len]);
    put(FADT_PM1_CNT_LEN, &[pm.pm1_cnt_len]);
    let boot_arch = IAPC_8042 | IAPC_NO_VGA | IAPC_NO_CMOS_RTC;
    put(FADT_IAPC_BOOT_ARCH, &boot_arch.to_le_bytes());
    let flags = FADT_WBINVD | FADT_PROC_C1 | FADT_PWR_BUTTON | FADT_SLP_BUTTON;
    put(FADT_FLAGS, &flags.to_le_bytes());
    put(131, &[5]); // FADT minor version: 6.5
    put(FADT_X_DSDT, &dsdt_addr.to_le_bytes());
    put(FADT_X_PM1A_EVT_BLK, &gas_io(pm.pm1a_evt_port, pm.pm1_evt_len * 8));
    put(FADT_X_PM1A_CNT_BLK, &gas_io(pm.pm1a_cnt_port, pm.pm1_cnt_len * 8));
    put(268, b"HEARTHVM"); // hypervisor vendor identity
    sdt(b"FACP", 6, &body)
}

/// MADT (§5.2.12): one enabled local APIC per vCPU (APIC IDs 0..n), the IOAPIC (ID `vcpus`,
/// as in the MP table) with its GSIs from 0, identity interrupt source overrides for ISA IRQs
/// 0-15 (IRQ n on pin n, as the MP table has it; KVM's PIT is on pin 0, not 2 as on PCs),
/// and LINT1 as NMI on every CPU.
pub fn madt(vcpus: u8, lapic_addr: u32, ioapic_addr: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&lapic_addr.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes()); // flags: PCAT_COMPAT, dual 8259s (KVM's PIC)
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
    /// The SLP_TYP value of S5 (soft off) for PM1_CNT.
    pub s5_slp_typ: u8,
}

/// DSDT (§5.2.11.1): `\_S5_` (the sleep type that powers off, §7.4.2) and two devices under
/// `\_SB`:
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
    let typ = aml::int(u64::from(cfg.s5_slp_typ));
    let s5 = aml::name_obj("\\_S5_", &aml::package(&[typ.clone(), typ, aml::int(0), aml::int(0)]));
    sdt(b"DSDT", 2, &[s5, aml::scope("\\_SB_", &[vgen, ged])].concat())
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

    const PM: PmConfig = PmConfig {
        sci_gsi: 22,
        pm1a_evt_port: 0x600,
        pm1_evt_len: 4,
        pm1a_cnt_port: 0x604,
        pm1_cnt_len: 2,
    };

    #[test]
    fn every_table_has_its_length_and_a_zero_sum() {
        let d = DsdtConfig {
            generation_id_addr: 0xe_f000,
            ged_gsi: 23,
            s5_slp_typ: 5,
        };
        for (sig, t) in [
            (b"XSDT", xsdt(&[0x1000, 0x2000])),
            (b"FACP", fadt(0x3000, PM)),
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
    fn fadt_is_full_acpi_with_pm1_blocks_and_an_8042() {
        let f = fadt(0xe_0200, PM);
        assert_eq!(f.len(), FADT_LEN);
        assert_eq!(f[8], 6, "revision");
        let u16_at = |o: usize| u16::from_le_bytes([f[o], f[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(f[o..o + 4].try_into().unwrap());
        let flags = u32_at(FADT_FLAGS);
        assert_eq!(
            flags & FADT_HW_REDUCED_ACPI,
            0,
            "not hardware-reduced: the guest keeps its PIC"
        );
        assert_ne!(u16_at(FADT_IAPC_BOOT_ARCH) & IAPC_8042, 0);
        assert_eq!(
            u64::from_le_bytes(f[FADT_X_DSDT..FADT_X_DSDT + 8].try_into().unwrap()),
            0xe_0200
        );
        // The 32-bit DSDT pointer stays 0: X_DSDT is used.
        assert_eq!(&f[40..44], &[0; 4]);
        assert_eq!(u16_at(FADT_SCI_INT), 22);
        assert_eq!(u32_at(48), 0, "no SMI command port: always in ACPI mode");
        assert_eq!(u32_at(FADT_PM1A_EVT_BLK), 0x600);
        assert_eq!(u32_at(FADT_PM1A_CNT_BLK), 0x604);
        assert_eq!((f[FADT_PM1_EVT_LEN], f[FADT_PM1_CNT_LEN]), (4, 2));
        assert_eq!(u32_at(76), 0, "no PM timer");
        // The 64-bit forms agree with the 32-bit ones (ACPICA warns on a mismatch).
        assert_eq!(
            &f[FADT_X_PM1A_EVT_BLK..FADT_X_PM1A_EVT_BLK + 12],
            &[1, 32, 0, 2, 0, 6, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            &f[FADT_X_PM1A_CNT_BLK..FADT_X_PM1A_CNT_BLK + 12],
            &[1, 16, 0, 2, 4, 6, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn madt_lists_cpus_ioapic_and_overrides() {
        let m = madt(2, 0xfee0_0000, 0xfec0_0000);
        let body = &m[44..];
        assert_eq!(
            &m[36..44],
            &[0, 0, 0xe0, 0xfe, 1, 0, 0, 0],
            "LAPIC address, PCAT_COMPAT"
        );
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
            s5_slp_typ: 5,
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
        // Name (\_S5_, Package (4) { 5, 5, Zero, Zero }), then one Scope (\_SB_) whose
        // two-byte PkgLength covers the rest.
        let s5 = [
            0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 5, 0x0a, 5, 0, 0,
        ];
        assert_eq!(&aml[..s5.len()], &s5);
        let sb = &aml[s5.len()..];
        assert_eq!(sb[0], 0x10);
        assert_eq!(&sb[1..3], &aml::pkg_length(sb.len() - 3)[..]);
    }
}

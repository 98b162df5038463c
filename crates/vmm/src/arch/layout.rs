//! Guest physical memory layout of a hearth x86_64 microVM.
//!
//! ```text
//! 0x0000_0500  GDT                       0x0000_9000  PML4, 0xa000 PDPT, 0xb000 PD (boot page tables)
//! 0x0000_0520  IDT (empty)               0x0002_0000  kernel command line
//! 0x0000_6000  PVH start_info + memmap   0x0009_e000  MP configuration table (reserved in e820)
//! 0x0000_7000  zero page (boot_params)   0x0009_fc00  MP floating pointer (0x9e000.. reserved)
//!                                        0x000a_0000  legacy VGA hole (not RAM)
//!                                        0x000e_0000  ACPI tables: RSDP, XSDT, FADT, MADT, DSDT
//!                                        0x000e_f000  VM generation ID (16 bytes; 0xe0000.. reserved)
//! 0x0000_8ff0  boot stack                0x0010_0000  high memory: kernel, then initrd at the top
//! 0xc000_0000  32-bit MMIO gap: virtio-mmio devices, IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000
//! 0x1_0000_0000  RAM above 3 GiB continues here
//! ```

pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
pub const PVH_INFO_ADDR: u64 = 0x6000;
pub const PVH_MEMMAP_ADDR: u64 = 0x6080;
/// Room for PVH memmap entries (24 bytes each) before the zero page.
pub const PVH_MEMMAP_MAX: usize = 64;
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
pub const BOOT_STACK: u64 = 0x8ff0;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Largest kernel command line hearth passes (Linux x86 COMMAND_LINE_SIZE is 2048).
pub const CMDLINE_MAX: usize = 2048;
/// Start of the reserved area holding the MP configuration table.
pub const MP_CONFIG_ADDR: u64 = 0x9_e000;
/// The MP floating pointer, in the last KiB below 640 KiB where Linux scans for it.
pub const MP_FLOATING_ADDR: u64 = 0x9_fc00;
pub const LOW_RAM_END: u64 = 0xa_0000;
/// The ACPI tables, from the RSDP (in the 0xe0000-0xfffff range Linux scans for it) on.
pub const ACPI_TABLES_START: u64 = 0xe_0000;
pub const ACPI_TABLES_END: u64 = 0xe_f000;
/// The 16-byte VM generation ID the DSDT's vmgenid device points at.
pub const VMGENID_ADDR: u64 = 0xe_f000;
/// End of the BIOS area the e820 map reserves for the ACPI tables and the generation ID.
pub const LOW_BIOS_END: u64 = 0x10_0000;
const _: () = assert!(VMGENID_ADDR >= ACPI_TABLES_END && VMGENID_ADDR + 16 <= LOW_BIOS_END);
pub const HIMEM_START: u64 = 0x10_0000;
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First address for virtio-mmio and other VMM-allocated MMIO windows.
pub const MMIO_DEVICES_START: u64 = 0xd000_0000;
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// KVM needs three pages for the real-mode TSS and one for the identity map (VMX only) below 4 GiB.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
/// Number of IOAPIC pins hearth routes (GSIs 0..24).
pub const IOAPIC_PINS: u32 = 24;
/// The ACPI Generic Event Device's interrupt (tells the guest its generation ID changed).
pub const GED_GSI: u32 = 23;
/// The ACPI system control interrupt (FADT SCI_INT). hearth raises no SCI events; the line
/// only has to exist and be nobody else's (Linux requests it, level-triggered).
pub const SCI_GSI: u32 = 22;
/// Last GSI for virtio devices (from 5; the two above are ACPI's). The guest has a legacy PIC
/// (full ACPI mode, not hardware-reduced), so Linux maps every GSI to the IRQ of the same
/// number and the devices on the kernel command line reach theirs.
pub const VIRTIO_LAST_GSI: u32 = 21;
const _: () = assert!(VIRTIO_LAST_GSI < SCI_GSI && SCI_GSI < GED_GSI && GED_GSI < IOAPIC_PINS);

/// The RAM regions for a guest of `mem_size` bytes: one below the MMIO gap and, if needed, one above 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![(0, MMIO_GAP_START), (MMIO_GAP_END, mem_size - MMIO_GAP_START)]
    }
}

/// e820 memory map types (ACPI spec §15).
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// The guest's memory map: (address, size, type).
pub fn e820_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, MP_CONFIG_ADDR, E820_RAM),
        (MP_CONFIG_ADDR, LOW_RAM_END - MP_CONFIG_ADDR, E820_RESERVED),
        (ACPI_TABLES_START, LOW_BIOS_END - ACPI_TABLES_START, E820_RESERVED),
    ];
    for (base, size) in ram_regions(mem_size) {
        let start = base.max(HIMEM_START);
        if base + size > start {
            map.push((start, base + size - start, E820_RAM));
        }
    }
    map
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_region() {
        assert_eq!(ram_regions(128 << 20), vec![(0, 128 << 20)]);
        assert_eq!(ram_regions(MMIO_GAP_START), vec![(0, MMIO_GAP_START)]);
    }

    #[test]
    fn large_guest_skips_the_mmio_gap() {
        let r = ram_regions(4 << 30);
        assert_eq!(r, vec![(0, MMIO_GAP_START), (MMIO_GAP_END, (4 << 30) - MMIO_GAP_START)]);
        assert_eq!(r.iter().map(|(_, s)| s).sum::<u64>(), 4 << 30);
    }

    #[test]
    fn e820_reserves_mptable_and_bios_hole() {
        let m = e820_map(128 << 20);
        assert_eq!(m[0], (0, MP_CONFIG_ADDR, E820_RAM));
        assert_eq!(m[1].2, E820_RESERVED);
        assert_eq!(
            m[2],
            (ACPI_TABLES_START, LOW_BIOS_END - ACPI_TABLES_START, E820_RESERVED)
        );
        assert_eq!(m[3], (HIMEM_START, (128 << 20) - HIMEM_START, E820_RAM));
        let big = e820_map(5 << 30);
        assert_eq!(
            big.last().unwrap(),
            &(MMIO_GAP_END, (5u64 << 30) - MMIO_GAP_START, E820_RAM)
        );
        // No RAM entry overlaps the MMIO gap.
        for (a, s, t) in big {
            if t == E820_RAM {
                assert!(a + s <= MMIO_GAP_START || a >= MMIO_GAP_END);
            }
        }
    }
}

//! Initial vCPU register state for the two entry points hearth supports:
//! the 64-bit Linux boot protocol (long mode, paging on, identity map of the first 1 GiB;
//! Documentation/x86/boot.rst "64-bit boot protocol") and PVH (32-bit protected mode, paging off;
//! xen/include/public/arch-x86/hvm/start_info.h).

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use super::layout::{BOOT_STACK, GDT_ADDR, IDT_ADDR, PDPT_ADDR, PD_ADDR, PML4_ADDR};
use crate::vstate::memory::GuestMemory;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// How the vCPU enters the guest kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode, `rsi` = zero page.
    Long64 { entry: u64, zero_page: u64 },
    /// PVH: 32-bit protected mode, `ebx` = hvm_start_info.
    Pvh { entry: u64, start_info: u64 },
}

/// A GDT descriptor from flags (access byte + flags nibble, as in the SDM vol. 3 §3.4.5), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | (limit as u64 & 0x0000_ffff)
}

/// Decodes a GDT entry into the segment KVM wants. Every field is masked to its width first.
#[allow(clippy::cast_possible_truncation)]
pub fn kvm_segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    let bits = |shift: u32, mask: u64| -> u8 { ((entry >> shift) & mask) as u8 };
    let base = (((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000)) as u32;
    let mut limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = bits(55, 1);
    if g == 1 {
        limit = (limit << 12) | 0xfff;
    }
    kvm_segment {
        base: u64::from(base),
        limit,
        selector: u16::from(table_index) * 8,
        type_: bits(40, 0xf),
        present: bits(47, 1),
        dpl: bits(45, 3),
        db: bits(54, 1),
        s: bits(44, 1),
        l: bits(53, 1),
        g,
        avl: bits(52, 1),
        unusable: u8::from(bits(47, 1) == 0),
        padding: 0,
    }
}

/// GDTs: null, code, data, TSS.
const GDT_LONG: [u64; 4] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code, DPL 0
    gdt_entry(0xc093, 0, 0xfffff), // data
    gdt_entry(0x808b, 0, 0xfffff), // TSS (busy)
];
const GDT_PVH: [u64; 4] = [
    0,
    gdt_entry(0xc09b, 0, 0xffff_ffff), // 32-bit flat code
    gdt_entry(0xc093, 0, 0xffff_ffff), // flat data
    gdt_entry(0x008b, 0, 0x67),        // TSS
];

/// Both GDTs have 4 entries.
const GDT_LIMIT: u16 = 4 * 8 - 1;

#[derive(Debug, thiserror::Error)]
#[error("cannot write boot {what} at guest address {addr:#x}")]
pub struct WriteError {
    what: &'static str,
    addr: u64,
}

fn write_u64s(mem: &GuestMemory, addr: u64, what: &'static str, vals: &[u64]) -> Result<(), WriteError> {
    for (i, v) in vals.iter().enumerate() {
        let a = addr + 8 * i as u64;
        mem.write_obj(*v, GuestAddress(a))
            .map_err(|_| WriteError { what, addr: a })?;
    }
    Ok(())
}

/// Writes the GDT/IDT (and, for long mode, identity-mapping page tables) and returns the
/// special registers for `mode`, starting from the vCPU's current `sregs`.
pub fn setup_sregs(mem: &GuestMemory, mode: EntryMode, mut sregs: kvm_sregs) -> Result<kvm_sregs, WriteError> {
    let gdt = match mode {
        EntryMode::Long64 { .. } => &GDT_LONG,
        EntryMode::Pvh { .. } => &GDT_PVH,
    };
    write_u64s(mem, GDT_ADDR, "GDT", gdt)?;
    write_u64s(mem, IDT_ADDR, "IDT", &[0])?;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = GDT_LIMIT;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    let code = kvm_segment_from_gdt(gdt[1], 1);
    let data = kvm_segment_from_gdt(gdt[2], 2);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment_from_gdt(gdt[3], 3);
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
    sregs.cr4 = 0;
    sregs.efer = 0;
    if let EntryMode::Long64 { .. } = mode {
        setup_page_tables(mem)?;
        sregs.cr3 = PML4_ADDR;
        sregs.cr4 |= X86_CR4_PAE;
        sregs.cr0 |= X86_CR0_PG;
        sregs.efer |= EFER_LME | EFER_LMA;
    }
    Ok(sregs)
}

/// Identity-maps the first 1 GiB with 2 MiB pages: enough for the kernel, the zero page, the
/// command line and the initrd; Linux builds its own page tables right after entry.
fn setup_page_tables(mem: &GuestMemory) -> Result<(), WriteError> {
    const PRESENT_RW: u64 = 0x3;
    const HUGE: u64 = 0x80;
    write_u64s(mem, PML4_ADDR, "PML4", &[PDPT_ADDR | PRESENT_RW])?;
    write_u64s(mem, PDPT_ADDR, "PDPT", &[PD_ADDR | PRESENT_RW])?;
    let pd: Vec<u64> = (0..512u64).map(|i| (i << 21) | PRESENT_RW | HUGE).collect();
    write_u64s(mem, PD_ADDR, "page directory", &pd)
}

/// General-purpose registers at entry.
pub fn boot_regs(mode: EntryMode) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match mode {
        EntryMode::Long64 { entry, zero_page } => {
            regs.rip = entry;
            regs.rsp = BOOT_STACK;
            regs.rbp = BOOT_STACK;
            regs.rsi = zero_page;
        }
        EntryMode::Pvh { entry, start_info } => {
            regs.rip = entry;
            regs.rbx = start_info;
        }
    }
    regs
}

/// x87/SSE control state as after FNINIT, with exceptions masked.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_expected_segments() {
        let cs = kvm_segment_from_gdt(GDT_LONG[1], 1);
        assert_eq!(
            (cs.selector, cs.l, cs.db, cs.type_, cs.present, cs.s),
            (8, 1, 0, 0xb, 1, 1)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = kvm_segment_from_gdt(GDT_LONG[2], 2);
        assert_eq!((ds.selector, ds.db, ds.type_), (16, 1, 3));
        let tss = kvm_segment_from_gdt(GDT_PVH[3], 3);
        assert_eq!((tss.type_, tss.s, tss.limit, tss.g), (0xb, 0, 0x67, 0));
        assert_eq!(kvm_segment_from_gdt(0, 0).unusable, 1);
        assert_eq!(gdt_entry(0xc093, 0x1234_5678, 0xfffff) >> 56, 0x12);
    }

    #[test]
    fn long_mode_sregs_and_page_tables() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mode = EntryMode::Long64 {
            entry: 0x100_0000,
            zero_page: 0x7000,
        };
        let s = setup_sregs(&mem, mode, kvm_sregs::default()).unwrap();
        assert_eq!(s.cr3, PML4_ADDR);
        assert_ne!(s.efer & EFER_LMA, 0);
        assert_ne!(s.cr0 & X86_CR0_PG, 0);
        let pde: u64 = mem.read_obj(GuestAddress(PD_ADDR + 8 * 3)).unwrap();
        assert_eq!(pde, (3 << 21) | 0x83);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_ADDR)).unwrap();
        assert_eq!(pml4, PDPT_ADDR | 3);
        assert_eq!(boot_regs(mode).rsi, 0x7000);
    }

    #[test]
    fn pvh_is_flat_protected_mode_without_paging() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mode = EntryMode::Pvh {
            entry: 0x100_0000,
            start_info: 0x6000,
        };
        let s = setup_sregs(&mem, mode, kvm_sregs::default()).unwrap();
        assert_eq!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!(s.efer, 0);
        assert_eq!((s.cs.db, s.cs.l), (1, 0));
        assert_eq!(boot_regs(mode).rbx, 0x6000);
    }
}

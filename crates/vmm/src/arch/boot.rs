//! Boot information the kernel reads at entry: the Linux zero page (`struct boot_params`,
//! Documentation/x86/zero-page.rst and boot.rst) or the PVH `hvm_start_info` with its memory
//! map. Fields are written at their documented offsets, so no C struct layout is involved.

use vm_memory::{Bytes, GuestAddress};

use super::layout::{
    e820_map, ACPI_TABLES_START, CMDLINE_ADDR, PVH_INFO_ADDR, PVH_MEMMAP_ADDR, PVH_MEMMAP_MAX, ZERO_PAGE_ADDR,
};
use crate::vstate::memory::GuestMemory;

/// Where the initrd was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdRange {
    pub addr: u64,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BootInfoError {
    #[error("cannot write {what} at guest address {addr:#x}")]
    Write { what: &'static str, addr: u64 },
    #[error("memory map has {0} entries, more than the boot protocol allows")]
    TooManyE820(usize),
}

/// Offsets in `struct boot_params` (zero-page.rst).
mod zp {
    pub const ACPI_RSDP_ADDR: u64 = 0x070;
    pub const EXT_RAMDISK_IMAGE: u64 = 0x0c0;
    pub const EXT_RAMDISK_SIZE: u64 = 0x0c4;
    pub const EXT_CMD_LINE_PTR: u64 = 0x0c8;
    pub const E820_ENTRIES: u64 = 0x1e8;
    pub const SETUP_HEADER: u64 = 0x1f1;
    pub const BOOT_FLAG: u64 = 0x1fe;
    pub const HEADER: u64 = 0x202;
    pub const TYPE_OF_LOADER: u64 = 0x210;
    pub const LOADFLAGS: u64 = 0x211;
    pub const RAMDISK_IMAGE: u64 = 0x218;
    pub const RAMDISK_SIZE: u64 = 0x21c;
    pub const CMD_LINE_PTR: u64 = 0x228;
    pub const KERNEL_ALIGNMENT: u64 = 0x230;
    pub const CMDLINE_SIZE: u64 = 0x238;
    pub const E820_TABLE: u64 = 0x2d0;
    pub const E820_MAX: usize = 128;
}

struct Writer<'a> {
    mem: &'a GuestMemory,
    base: u64,
    what: &'static str,
}

impl Writer<'_> {
    fn put<T: vm_memory::ByteValued>(&self, off: u64, v: T) -> Result<(), BootInfoError> {
        let addr = self.base + off;
        self.mem
            .write_obj(v, GuestAddress(addr))
            .map_err(|_| BootInfoError::Write { what: self.what, addr })
    }
    fn bytes(&self, off: u64, b: &[u8]) -> Result<(), BootInfoError> {
        let addr = self.base + off;
        self.mem
            .write_slice(b, GuestAddress(addr))
            .map_err(|_| BootInfoError::Write { what: self.what, addr })
    }
}

fn lo32(v: u64) -> u32 {
    (v & 0xffff_ffff) as u32
}
fn hi32(v: u64) -> u32 {
    (v >> 32) as u32
}

/// Writes the zero page for the 64-bit boot protocol. `setup_header` is the kernel's own header
/// (bzImage bytes from 0x1f1) when there is one; an ELF vmlinux has none and gets a minimal one.
pub fn write_zero_page(
    mem: &GuestMemory,
    mem_size: u64,
    setup_header: Option<&[u8]>,
    cmdline_len: usize,
    initrd: Option<InitrdRange>,
) -> Result<u64, BootInfoError> {
    let w = Writer {
        mem,
        base: ZERO_PAGE_ADDR,
        what: "zero page",
    };
    w.bytes(0, &[0u8; 4096])?;
    if let Some(h) = setup_header {
        w.bytes(zp::SETUP_HEADER, h)?;
    }
    w.put(zp::ACPI_RSDP_ADDR, ACPI_TABLES_START)?;
    w.put(zp::BOOT_FLAG, 0xaa55u16)?;
    w.put(zp::HEADER, 0x5372_6448u32)?; // "HdrS"
    w.put(zp::TYPE_OF_LOADER, 0xffu8)?; // undefined boot loader
                                        // LOADED_HIGH (bit 0): the protected-mode kernel is at 1 MiB; CAN_USE_HEAP not needed.
    w.put(zp::LOADFLAGS, 0x01u8)?;
    w.put(zp::KERNEL_ALIGNMENT, 0x0100_0000u32)?;
    w.put(zp::CMD_LINE_PTR, lo32(CMDLINE_ADDR))?;
    w.put(zp::EXT_CMD_LINE_PTR, hi32(CMDLINE_ADDR))?;
    w.put(zp::CMDLINE_SIZE, u32::try_from(cmdline_len).unwrap_or(u32::MAX))?;
    if let Some(rd) = initrd {
        w.put(zp::RAMDISK_IMAGE, lo32(rd.addr))?;
        w.put(zp::EXT_RAMDISK_IMAGE, hi32(rd.addr))?;
        w.put(zp::RAMDISK_SIZE, lo32(rd.size))?;
        w.put(zp::EXT_RAMDISK_SIZE, hi32(rd.size))?;
    }
    let map = e820_map(mem_size);
    if map.len() > zp::E820_MAX {
        return Err(BootInfoError::TooManyE820(map.len()));
    }
    for (i, (addr, size, ty)) in map.iter().enumerate() {
        let off = zp::E820_TABLE + 20 * i as u64;
        w.put(off, *addr)?;
        w.put(off + 8, *size)?;
        w.put(off + 16, *ty)?;
    }
    w.put(
        zp::E820_ENTRIES,
        u8::try_from(map.len()).map_err(|_| BootInfoError::TooManyE820(map.len()))?,
    )?;
    Ok(ZERO_PAGE_ADDR)
}

/// PVH start_info magic ("xEn3" with the top bit set).
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Writes `hvm_start_info` (version 1) with the memory map and the initrd as module 0.
pub fn write_pvh_start_info(
    mem: &GuestMemory,
    mem_size: u64,
    initrd: Option<InitrdRange>,
) -> Result<u64, BootInfoError> {
    let map = e820_map(mem_size);
    if map.len() > PVH_MEMMAP_MAX {
        return Err(BootInfoError::TooManyE820(map.len()));
    }
    let w = Writer {
        mem,
        base: PVH_INFO_ADDR,
        what: "PVH start_info",
    };
    // Layout: start_info (56 bytes) at 0x0, one modlist entry (32 bytes) at 0x38 when there is
    // an initrd, then the memory map at PVH_MEMMAP_ADDR.
    const MODLIST_OFF: u64 = 0x38;
    const _: () = assert!(PVH_INFO_ADDR + MODLIST_OFF + 32 <= PVH_MEMMAP_ADDR);
    w.bytes(0, &[0u8; 0x80])?;
    w.put(0x00, XEN_HVM_START_MAGIC)?;
    w.put(0x04, 1u32)?; // version
    if let Some(rd) = initrd {
        w.put(0x0c, 1u32)?; // nr_modules
        w.put(0x10, PVH_INFO_ADDR + MODLIST_OFF)?;
        w.put(MODLIST_OFF, rd.addr)?;
        w.put(MODLIST_OFF + 8, rd.size)?;
    }
    w.put(0x18, CMDLINE_ADDR)?;
    w.put(0x20, ACPI_TABLES_START)?; // rsdp_paddr
    w.put(0x28, PVH_MEMMAP_ADDR)?;
    w.put(
        0x30,
        u32::try_from(map.len()).map_err(|_| BootInfoError::TooManyE820(map.len()))?,
    )?;
    let m = Writer {
        mem,
        base: PVH_MEMMAP_ADDR,
        what: "PVH memory map",
    };
    for (i, (addr, size, ty)) in map.iter().enumerate() {
        let off = 24 * i as u64;
        m.put(off, *addr)?;
        m.put(off + 8, *size)?;
        m.put(off + 16, *ty)?;
        m.put(off + 20, 0u32)?;
    }
    Ok(PVH_INFO_ADDR)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;
    use crate::arch::layout::{E820_RAM, HIMEM_START};

    fn mem() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
    }

    #[test]
    fn zero_page_has_header_cmdline_initrd_and_e820() {
        let m = mem();
        let rd = InitrdRange {
            addr: 0x7f0_0000,
            size: 0x1234,
        };
        write_zero_page(&m, 128 << 20, None, 42, Some(rd)).unwrap();
        let r32 = |o: u64| m.read_obj::<u32>(GuestAddress(ZERO_PAGE_ADDR + o)).unwrap();
        assert_eq!(r32(zp::HEADER), 0x5372_6448);
        assert_eq!(r32(zp::CMD_LINE_PTR), CMDLINE_ADDR as u32);
        assert_eq!(r32(zp::CMDLINE_SIZE), 42);
        assert_eq!(r32(zp::RAMDISK_IMAGE), 0x7f0_0000);
        assert_eq!(r32(zp::RAMDISK_SIZE), 0x1234);
        let rsdp: u64 = m.read_obj(GuestAddress(ZERO_PAGE_ADDR + zp::ACPI_RSDP_ADDR)).unwrap();
        assert_eq!(rsdp, ACPI_TABLES_START);
        let n: u8 = m.read_obj(GuestAddress(ZERO_PAGE_ADDR + zp::E820_ENTRIES)).unwrap();
        assert_eq!(n, 4);
        let e2 = ZERO_PAGE_ADDR + zp::E820_TABLE + 60;
        assert_eq!(m.read_obj::<u64>(GuestAddress(e2)).unwrap(), HIMEM_START);
        assert_eq!(m.read_obj::<u32>(GuestAddress(e2 + 16)).unwrap(), E820_RAM);
    }

    #[test]
    fn bzimage_header_is_kept_but_loader_fields_are_ours() {
        let m = mem();
        let mut hdr = vec![0u8; 0x80];
        hdr[0] = 0x1e; // setup_sects
        write_zero_page(&m, 64 << 20, Some(&hdr), 1, None).unwrap();
        let sects: u8 = m.read_obj(GuestAddress(ZERO_PAGE_ADDR + zp::SETUP_HEADER)).unwrap();
        assert_eq!(sects, 0x1e);
        let ty: u8 = m.read_obj(GuestAddress(ZERO_PAGE_ADDR + zp::TYPE_OF_LOADER)).unwrap();
        assert_eq!(ty, 0xff);
    }

    #[test]
    fn pvh_start_info_points_at_memmap_and_module() {
        let m = mem();
        let rd = InitrdRange {
            addr: 0x100_0000,
            size: 77,
        };
        write_pvh_start_info(&m, 128 << 20, Some(rd)).unwrap();
        let r = |o: u64| m.read_obj::<u64>(GuestAddress(PVH_INFO_ADDR + o)).unwrap();
        assert_eq!(r(0) as u32, XEN_HVM_START_MAGIC);
        assert_eq!(r(0x28), PVH_MEMMAP_ADDR);
        let modlist = r(0x10);
        assert_eq!(m.read_obj::<u64>(GuestAddress(modlist)).unwrap(), 0x100_0000);
        assert_eq!(m.read_obj::<u64>(GuestAddress(modlist + 8)).unwrap(), 77);
        assert_eq!(m.read_obj::<u32>(GuestAddress(PVH_INFO_ADDR + 0x30)).unwrap(), 4);
        assert_eq!(r(0x20), ACPI_TABLES_START, "rsdp_paddr");
    }
}

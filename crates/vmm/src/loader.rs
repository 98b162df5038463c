//! Loading the guest kernel, initrd and command line into guest memory.
//!
//! Kernels: an ELF `vmlinux` (booted through its PVH entry point when it has one, else the
//! 64-bit Linux boot protocol at its ELF entry) or a `bzImage` (64-bit boot protocol at
//! `startup_64`, 0x200 past the protected-mode code). Parsing is linux-loader's; placement and
//! error reporting are hearth's.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::{Bytes, GuestAddress};

use crate::arch::boot::InitrdRange;
use crate::arch::layout::{CMDLINE_ADDR, CMDLINE_MAX, HIMEM_START, MMIO_GAP_START};
use crate::arch::regs::EntryMode;
use crate::vstate::memory::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open {what} {path}")]
    Open {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Linux kernel (neither an ELF vmlinux nor a bzImage)")]
    NotAKernel { path: PathBuf },
    #[error("cannot load kernel {path}: {detail}")]
    Kernel { path: PathBuf, detail: String },
    #[error("bzImage {path} has no 64-bit entry point (boot protocol 2.12+ with XLF_KERNEL_64 needed)")]
    No64BitEntry { path: PathBuf },
    #[error("initrd {path} ({size} bytes) does not fit in guest memory between the kernel end ({kernel_end:#x}) and {limit:#x}")]
    InitrdTooBig {
        path: PathBuf,
        size: u64,
        kernel_end: u64,
        limit: u64,
    },
    #[error("initrd {path} is empty")]
    InitrdEmpty { path: PathBuf },
    #[error("cannot copy initrd {path} into guest memory")]
    InitrdWrite { path: PathBuf },
    #[error("kernel command line is {len} bytes, more than the {max} the guest accepts")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("cannot write the kernel command line to guest memory")]
    CmdlineWrite,
}

/// Which boot protocol to use with an ELF kernel that offers both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BootProtocol {
    /// PVH when the kernel has a PVH note, else the 64-bit Linux boot protocol.
    #[default]
    Auto,
    Pvh,
    Linux64,
}

/// A kernel in guest memory.
#[derive(Clone, Debug)]
pub struct LoadedKernel {
    /// Entry point and protocol (the boot-information address is filled in later).
    pub entry: KernelEntry,
    /// First free guest address after the kernel image.
    pub end: u64,
    /// The bzImage setup header bytes (from offset 0x1f1), to be copied into the zero page.
    pub setup_header: Option<Vec<u8>>,
    /// Highest address the initrd may end at (bzImage `initrd_addr_max`).
    pub initrd_max: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelEntry {
    Pvh(u64),
    Linux64(u64),
}

impl KernelEntry {
    /// The vCPU entry state, given where the boot information was written.
    pub fn mode(self, boot_info: u64) -> EntryMode {
        match self {
            KernelEntry::Pvh(entry) => EntryMode::Pvh {
                entry,
                start_info: boot_info,
            },
            KernelEntry::Linux64(entry) => EntryMode::Long64 {
                entry,
                zero_page: boot_info,
            },
        }
    }
}

fn open(what: &'static str, path: &Path) -> Result<File, LoadError> {
    File::open(path).map_err(|source| LoadError::Open {
        what,
        path: path.to_owned(),
        source,
    })
}

const SETUP_HEADER_START: u64 = 0x1f1;
/// Enough of the setup header for protocol 2.15 (ends before 0x268).
const SETUP_HEADER_LEN: usize = 0x268 - 0x1f1;
const XLF_KERNEL_64: u16 = 1 << 0;

/// Loads `path` into `mem`.
pub fn load_kernel(mem: &GuestMemory, path: &Path, protocol: BootProtocol) -> Result<LoadedKernel, LoadError> {
    let mut f = open("kernel", path)?;
    let mut magic = [0u8; 4];
    let read_err = |source| LoadError::Read {
        what: "kernel",
        path: path.to_owned(),
        source,
    };
    if let Err(e) = f.read_exact(&mut magic) {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            LoadError::NotAKernel { path: path.to_owned() }
        } else {
            read_err(e)
        });
    }
    let kernel_err = |e: linux_loader::loader::Error| LoadError::Kernel {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    if magic == *b"\x7fELF" {
        let r = Elf::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START))).map_err(kernel_err)?;
        let pvh = match r.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(a) => Some(a.0),
            _ => None,
        };
        let entry = match (protocol, pvh) {
            (BootProtocol::Auto | BootProtocol::Pvh, Some(a)) => KernelEntry::Pvh(a),
            (BootProtocol::Pvh, None) => {
                return Err(LoadError::Kernel {
                    path: path.to_owned(),
                    detail: "no PVH entry point (ELF note)".into(),
                })
            }
            _ => KernelEntry::Linux64(r.kernel_load.0),
        };
        return Ok(LoadedKernel {
            entry,
            end: r.kernel_end,
            setup_header: None,
            initrd_max: u64::MAX,
        });
    }
    // bzImage: "HdrS" at 0x202.
    let mut hdr = vec![0u8; SETUP_HEADER_LEN];
    f.seek(SeekFrom::Start(SETUP_HEADER_START)).map_err(read_err)?;
    if f.read_exact(&mut hdr).is_err() || hdr[0x202 - 0x1f1..0x206 - 0x1f1] != *b"HdrS" {
        return Err(LoadError::NotAKernel { path: path.to_owned() });
    }
    let version = u16::from_le_bytes([hdr[0x206 - 0x1f1], hdr[0x207 - 0x1f1]]);
    let xloadflags = u16::from_le_bytes([hdr[0x236 - 0x1f1], hdr[0x237 - 0x1f1]]);
    if version < 0x20c || xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LoadError::No64BitEntry { path: path.to_owned() });
    }
    let initrd_max = u64::from(u32::from_le_bytes(
        hdr[0x22c - 0x1f1..0x230 - 0x1f1].try_into().unwrap_or([0xff; 4]),
    ));
    let r = BzImage::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START))).map_err(kernel_err)?;
    Ok(LoadedKernel {
        entry: KernelEntry::Linux64(r.kernel_load.0 + 0x200),
        end: r.kernel_end,
        setup_header: Some(hdr),
        initrd_max,
    })
}

/// Copies the initrd to the highest page-aligned spot of low RAM (below the MMIO gap).
pub fn load_initrd(
    mem: &GuestMemory,
    mem_size: u64,
    path: &Path,
    kernel: &LoadedKernel,
) -> Result<InitrdRange, LoadError> {
    let mut f = open("initrd", path)?;
    let read_err = |source| LoadError::Read {
        what: "initrd",
        path: path.to_owned(),
        source,
    };
    let size = f.metadata().map_err(read_err)?.len();
    if size == 0 {
        return Err(LoadError::InitrdEmpty { path: path.to_owned() });
    }
    let limit = mem_size.min(MMIO_GAP_START).min(kernel.initrd_max.saturating_add(1));
    let too_big = || LoadError::InitrdTooBig {
        path: path.to_owned(),
        size,
        kernel_end: kernel.end,
        limit,
    };
    let addr = limit.checked_sub(size).ok_or_else(too_big)? & !0xfff;
    if addr < kernel.end {
        return Err(too_big());
    }
    let len = usize::try_from(size).map_err(|_| too_big())?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut f, len)
        .map_err(|_| LoadError::InitrdWrite { path: path.to_owned() })?;
    Ok(InitrdRange { addr, size })
}

/// Writes the NUL-terminated command line; returns its length without the NUL.
pub fn load_cmdline(mem: &GuestMemory, cmdline: &str) -> Result<usize, LoadError> {
    let len = cmdline.len();
    if len + 1 > CMDLINE_MAX {
        return Err(LoadError::CmdlineTooLong {
            len,
            max: CMDLINE_MAX - 1,
        });
    }
    if cmdline.contains('\0') {
        return Err(LoadError::CmdlineNul);
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(|_| LoadError::CmdlineWrite)?;
    Ok(len)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mem(size: u64) -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap()
    }

    fn tmpfile(name: &str, contents: &[u8]) -> PathBuf {
        let p = std::env::temp_dir().join(format!("hearth-loader-{}-{name}", std::process::id()));
        File::create(&p).unwrap().write_all(contents).unwrap();
        p
    }

    #[test]
    fn rejects_non_kernels_and_missing_files() {
        let m = mem(4 << 20);
        let p = tmpfile(
            "text",
            b"this is not a kernel at all, just some text that is long enough",
        );
        assert!(matches!(
            load_kernel(&m, &p, BootProtocol::Auto),
            Err(LoadError::NotAKernel { .. })
        ));
        let empty = tmpfile("empty", b"");
        assert!(matches!(
            load_kernel(&m, &empty, BootProtocol::Auto),
            Err(LoadError::NotAKernel { .. })
        ));
        let trunc = tmpfile("trunc-elf", b"\x7fELF\x02\x01\x01");
        let e = load_kernel(&m, &trunc, BootProtocol::Auto).unwrap_err();
        assert!(matches!(e, LoadError::Kernel { .. }), "{e}");
        let missing = Path::new("/nonexistent/vmlinux");
        let e = load_kernel(&m, missing, BootProtocol::Auto).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"));
        for p in [p, empty, trunc] {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn initrd_goes_to_top_of_ram_and_must_fit() {
        let m = mem(8 << 20);
        let k = LoadedKernel {
            entry: KernelEntry::Linux64(0x100_0000),
            end: 0x20_0000,
            setup_header: None,
            initrd_max: u64::MAX,
        };
        let p = tmpfile("initrd", &[0xabu8; 5000]);
        let r = load_initrd(&m, 8 << 20, &p, &k).unwrap();
        assert_eq!(r.size, 5000);
        assert_eq!(r.addr % 4096, 0);
        assert!(r.addr + r.size <= 8 << 20 && r.addr >= (8 << 20) - 8192);
        assert_eq!(m.read_obj::<u8>(GuestAddress(r.addr + 4999)).unwrap(), 0xab);
        let tight = LoadedKernel {
            end: (8 << 20) - 4096,
            ..k.clone()
        };
        assert!(matches!(
            load_initrd(&m, 8 << 20, &p, &tight),
            Err(LoadError::InitrdTooBig { .. })
        ));
        let empty = tmpfile("initrd-empty", b"");
        assert!(matches!(
            load_initrd(&m, 8 << 20, &empty, &k),
            Err(LoadError::InitrdEmpty { .. })
        ));
        std::fs::remove_file(p).unwrap();
        std::fs::remove_file(empty).unwrap();
    }

    #[test]
    fn cmdline_is_nul_terminated_and_bounded() {
        let m = mem(1 << 20);
        assert_eq!(load_cmdline(&m, "console=ttyS0").unwrap(), 13);
        assert_eq!(m.read_obj::<u8>(GuestAddress(CMDLINE_ADDR + 13)).unwrap(), 0);
        assert!(matches!(
            load_cmdline(&m, &"x".repeat(CMDLINE_MAX)),
            Err(LoadError::CmdlineTooLong { .. })
        ));
        assert!(matches!(load_cmdline(&m, "a\0b"), Err(LoadError::CmdlineNul)));
    }
}

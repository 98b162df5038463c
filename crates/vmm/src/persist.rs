//! Snapshots of a whole microVM: how one is written and how it is read back.
//!
//! A snapshot is two files:
//! - the **state file** (`snapshot` crate container: magic, format version, CRC64, written
//!   atomically): the VM's configuration (to rebuild the same devices on the same backends),
//!   the in-kernel devices (irqchip, PIT, clock), every vCPU's registers, the serial port and
//!   every virtio device's transport and queue state ([`MachineSnapshot`]);
//! - the **memory file**: guest RAM, region after region, byte for byte at its offset (pages
//!   that are all zero are left as holes, so the file is sparse). Restoring maps it
//!   `MAP_PRIVATE`: pages load lazily on first touch, and clones of one snapshot share them
//!   copy-on-write through the page cache.
//!
//! Creating requires a paused VM and runs on the event loop thread, so neither vCPUs nor
//! device queues change what is being saved. The memory file is written (atomically) before the
//! state file, so a state file that loads always has its memory next to it.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use devices::legacy::serial::SerialSnapshot;
use serde::{Deserialize, Serialize};
use snapshot::{AtomicFile, SnapshotError};
use virtio::TransportState;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::MmapRegion;
use vm_memory::FileOffset;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap};

use crate::config::VmConfig;
use crate::host::HostProfile;
use crate::vmm::{Vmm, VmmError};
use crate::vstate::memory::GuestMemory;
use crate::vstate::uffd_backend::{memory_from_handler, UffdBackendError, UffdSession};
use crate::vstate::vcpu_state::VcpuState;
use crate::vstate::vm::VmState;

/// Names this program in snapshot headers and messages.
pub fn writer_name() -> String {
    format!("hearth {}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    File(#[from] SnapshotError),
    #[error(transparent)]
    Vmm(#[from] VmmError),
    #[error("cannot save the VM's in-kernel device state")]
    VmState(#[source] crate::vstate::vm::VmError),
    #[error("this VM was not built from a configuration hearth can rebuild (no snapshot possible)")]
    NoConfig,
    #[error("cannot write memory file {path}")]
    MemoryWrite {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open memory file {path}")]
    MemoryOpen {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("memory file {path} is {found} bytes; the snapshot needs {expected}")]
    MemorySize { path: String, found: u64, expected: u64 },
    #[error("cannot map memory file {path}")]
    MemoryMap {
        path: String,
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("diff snapshots need dirty-page tracking (machine-config track_dirty_pages, or --track-dirty-pages)")]
    NoDirtyLog,
    #[error("{path} is a diff snapshot: restore it with its base's memory file (--mem) and its own (--mem-diff)")]
    DiffWithoutBase { path: String },
    #[error("cannot apply diff memory file {path}")]
    DiffApply {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the Uffd memory backend restores full snapshots only (no diff memory files)")]
    UffdDiff { path: String },
    #[error(transparent)]
    Uffd(#[from] UffdBackendError),
    #[error("the snapshot's guest memory layout is invalid")]
    Layout,
    #[error("the snapshot was taken on a {saved} host; this is a {here} host")]
    HostKind { saved: String, here: String },
    #[error("the snapshot was taken on a {saved} CPU; this host has a {here} CPU")]
    CpuVendor { saved: String, here: String },
}

/// One guest RAM region and where it lies in the memory file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRegionInfo {
    pub guest_addr: u64,
    pub size: u64,
    pub file_offset: u64,
}

/// The host a snapshot was taken on, for the compatibility check at restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// `HostProfile::kind` (e.g. "PVM", "VMX/SVM").
    pub kind: String,
    /// CPUID leaf 0 vendor string.
    pub cpu_vendor: String,
}

impl HostInfo {
    pub fn here() -> Self {
        Self {
            kind: HostProfile::detect().kind.to_string(),
            cpu_vendor: cpu_vendor(),
        }
    }

    /// Refuses a snapshot whose guest state this host cannot run.
    pub fn check_compatible(&self, here: &HostInfo) -> Result<(), PersistError> {
        if self.kind != here.kind {
            return Err(PersistError::HostKind {
                saved: self.kind.clone(),
                here: here.kind.clone(),
            });
        }
        if self.cpu_vendor != here.cpu_vendor {
            return Err(PersistError::CpuVendor {
                saved: self.cpu_vendor.clone(),
                here: here.cpu_vendor.clone(),
            });
        }
        Ok(())
    }
}

fn cpu_vendor() -> String {
    let r = std::arch::x86_64::__cpuid(0);
    let mut v = Vec::with_capacity(12);
    for reg in [r.ebx, r.edx, r.ecx] {
        v.extend_from_slice(&reg.to_le_bytes());
    }
    String::from_utf8_lossy(&v).into_owned()
}

/// A full snapshot's memory file holds all of guest RAM; a diff snapshot's only the pages
/// written since the previous snapshot (the rest are holes), to be laid over its base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    Full,
    Diff,
}

/// Everything in a state file.
#[derive(Debug, Serialize, Deserialize)]
pub struct MachineSnapshot {
    pub kind: SnapshotKind,
    pub host: HostInfo,
    pub config: VmConfig,
    pub memory: Vec<MemoryRegionInfo>,
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
    pub serial: SerialSnapshot,
    pub virtio: Vec<TransportState>,
    /// Where the VM generation ID is and the GED's GSI; `None` for a guest without ACPI.
    pub acpi: Option<crate::arch::acpi::AcpiState>,
}

/// What a snapshot took, for the caller to report.
#[derive(Clone, Debug)]
pub struct SnapshotInfo {
    pub state_path: PathBuf,
    pub mem_path: PathBuf,
    pub mem_bytes: u64,
    /// Bytes actually written (pages not all zero).
    pub mem_written: u64,
    pub millis: u128,
}

/// Writes a snapshot of a paused VM. `progress(done, total)` is called as memory is written.
/// With dirty-page tracking on, every snapshot also starts a new epoch for the next diff.
pub fn create(
    vmm: &mut Vmm,
    state_path: &Path,
    mem_path: &Path,
    kind: SnapshotKind,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SnapshotInfo, PersistError> {
    let started = Instant::now();
    let config = vmm.config().cloned().ok_or(PersistError::NoConfig)?;
    let vcpus = vmm.save_vcpu_states()?;
    let vm = vmm.vm().save_state().map_err(PersistError::VmState)?;
    let devices = vmm.devices();
    let serial = devices
        .serial
        .as_ref()
        .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).save_state())
        .unwrap_or_default();
    let virtio = devices
        .virtio
        .iter()
        .map(|slot| slot.transport.lock().unwrap_or_else(|e| e.into_inner()).save_state())
        .collect();
    let dirty = if vmm.dirty_tracking() {
        Some(vmm.vm().take_dirty_pages(vmm.memory()).map_err(PersistError::VmState)?)
    } else if kind == SnapshotKind::Diff {
        return Err(PersistError::NoDirtyLog);
    } else {
        None
    };
    let select = match (kind, &dirty) {
        (SnapshotKind::Diff, Some(d)) => Pages::Dirty(d),
        _ => Pages::NonZero,
    };
    let (memory, mem_written) = write_memory(vmm.memory(), mem_path, select, progress)?;
    if dirty.is_some() {
        for region in vmm.memory().iter() {
            region_bitmap(region).reset();
        }
    }
    let mem_bytes = memory.iter().map(|r| r.size).sum();
    let snap = MachineSnapshot {
        kind,
        host: HostInfo::here(),
        config,
        memory,
        vm,
        vcpus,
        serial,
        virtio,
        acpi: devices.acpi.as_ref().map(|a| a.state),
    };
    snapshot::save(state_path, &writer_name(), &snap)?;
    Ok(SnapshotInfo {
        state_path: state_path.to_path_buf(),
        mem_path: mem_path.to_path_buf(),
        mem_bytes,
        mem_written,
        millis: started.elapsed().as_millis(),
    })
}

const PAGE: usize = 4096;
/// Memory is written in chunks of this size (progress granularity).
const CHUNK: usize = 4 << 20;

/// Which pages a memory file gets.
enum Pages<'a> {
    /// Every page that is not all zero (a full snapshot; holes read back as zero).
    NonZero,
    /// Pages KVM logged as written by the guest (per slot) or vm-memory's bitmap as written by
    /// hearth's devices — zero or not (a diff snapshot; holes mean "as in the base").
    Dirty(&'a [Vec<u64>]),
}

fn page_selected(
    pages: &Pages<'_>,
    slot: usize,
    region: &GuestRegionMmap<AtomicBitmap>,
    offset: usize,
    page: &[u8],
) -> bool {
    match pages {
        Pages::NonZero => page.iter().any(|&b| b != 0),
        Pages::Dirty(kvm) => {
            let index = offset / PAGE;
            let by_guest = kvm
                .get(slot)
                .and_then(|words| words.get(index / 64))
                .is_some_and(|w| w & (1 << (index % 64)) != 0);
            by_guest || region_bitmap(region).is_addr_set(offset)
        }
    }
}

/// The dirty bitmap of one region (offsets within the region).
fn region_bitmap(region: &GuestRegionMmap<AtomicBitmap>) -> &AtomicBitmap {
    let mapping: &MmapRegion<AtomicBitmap> = region;
    mapping.bitmap()
}

/// Writes guest RAM to `path` (atomically): the pages `pages` selects, at their offsets; the
/// others are holes.
fn write_memory(
    mem: &GuestMemory,
    path: &Path,
    pages: Pages<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<MemoryRegionInfo>, u64), PersistError> {
    let shown = path.display().to_string();
    let err = |source| PersistError::MemoryWrite {
        path: shown.clone(),
        source,
    };
    let total: u64 = mem.iter().map(|r| r.len()).sum();
    let mut out = AtomicFile::create(path).map_err(err)?;
    let mut regions = Vec::new();
    let mut offset = 0u64;
    let mut done = 0u64;
    let mut written = 0u64;
    let mut buf = vec![0u8; CHUNK];
    for (slot, region) in mem.iter().enumerate() {
        regions.push(MemoryRegionInfo {
            guest_addr: region.start_addr().0,
            size: region.len(),
            file_offset: offset,
        });
        let len = usize::try_from(region.len()).map_err(|_| PersistError::Layout)?;
        let mut pos = 0usize;
        while pos < len {
            let n = CHUNK.min(len - pos);
            let chunk = &mut buf[..n];
            let slice = region
                .get_slice(vm_memory::MemoryRegionAddress(pos as u64), n)
                .map_err(|_| PersistError::Layout)?;
            slice.copy_to(chunk);
            let file = out.file();
            for (i, page) in chunk.chunks(PAGE).enumerate() {
                if page_selected(&pages, slot, region, pos + i * PAGE, page) {
                    let at = offset + (pos + i * PAGE) as u64;
                    file.seek(SeekFrom::Start(at)).map_err(err)?;
                    file.write_all(page).map_err(err)?;
                    written += page.len() as u64;
                }
            }
            pos += n;
            done += n as u64;
            progress(done, total);
        }
        offset += region.len();
    }
    out.file().set_len(offset).map_err(err)?;
    out.commit().map_err(err)?;
    Ok((regions, written))
}

/// Reads and checks a state file (format, CRC, host compatibility).
pub fn load(state_path: &Path) -> Result<MachineSnapshot, PersistError> {
    let (_, snap): (_, MachineSnapshot) = snapshot::load(state_path, &writer_name())?;
    snap.host.check_compatible(&HostInfo::here())?;
    Ok(snap)
}

/// Maps `base` (a full snapshot's memory file) privately at the saved guest addresses, then
/// lays each diff memory file over it in order (their data extents; holes keep what is below).
pub fn map_memory_with_diffs(
    snap: &MachineSnapshot,
    base: &Path,
    diffs: &[PathBuf],
    state_path: &Path,
) -> Result<GuestMemory, PersistError> {
    if snap.kind == SnapshotKind::Diff && diffs.is_empty() {
        return Err(PersistError::DiffWithoutBase {
            path: state_path.display().to_string(),
        });
    }
    let mem = map_memory(snap, base)?;
    for d in diffs {
        apply_diff(&mem, snap, d)?;
    }
    Ok(mem)
}

/// Anonymous guest memory at the saved guest addresses, filled on demand by the page-fault
/// handler on `socket` from the snapshot's memory file (the Uffd backend). The handler serves
/// one file, so diff snapshots are refused.
pub fn uffd_memory(
    snap: &MachineSnapshot,
    socket: &Path,
    diffs: &[PathBuf],
    state_path: &Path,
) -> Result<(GuestMemory, UffdSession), PersistError> {
    if snap.kind == SnapshotKind::Diff || !diffs.is_empty() {
        return Err(PersistError::UffdDiff {
            path: state_path.display().to_string(),
        });
    }
    let mut regions = Vec::with_capacity(snap.memory.len());
    for r in &snap.memory {
        let size = usize::try_from(r.size).map_err(|_| PersistError::Layout)?;
        regions.push((GuestAddress(r.guest_addr), size, r.file_offset));
    }
    Ok(memory_from_handler(&regions, socket)?)
}

/// Copies the data extents of a diff memory file into guest memory.
fn apply_diff(mem: &GuestMemory, snap: &MachineSnapshot, path: &Path) -> Result<(), PersistError> {
    use std::os::fd::AsRawFd;
    let shown = path.display().to_string();
    let err = |source| PersistError::DiffApply {
        path: shown.clone(),
        source,
    };
    let mut file = File::open(path).map_err(err)?;
    let expected: u64 = snap.memory.iter().map(|r| r.size).sum();
    let found = file.metadata().map_err(err)?.len();
    if found != expected {
        return Err(PersistError::MemorySize {
            path: shown,
            found,
            expected,
        });
    }
    let fd = file.as_raw_fd();
    let mut pos: i64 = 0;
    let end = i64::try_from(found).map_err(|_| PersistError::Layout)?;
    let mut buf = vec![0u8; CHUNK];
    while pos < end {
        // SAFETY: lseek on an fd this function owns; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no data after pos
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { end } else { hole };
        let mut at = u64::try_from(data).map_err(|_| PersistError::Layout)?;
        let stop = u64::try_from(hole).map_err(|_| PersistError::Layout)?;
        while at < stop {
            let n = usize::try_from((stop - at).min(CHUNK as u64)).map_err(|_| PersistError::Layout)?;
            file.seek(SeekFrom::Start(at)).map_err(err)?;
            std::io::Read::read_exact(&mut file, &mut buf[..n]).map_err(err)?;
            write_file_range(mem, snap, at, &buf[..n])?;
            at += n as u64;
        }
        pos = hole;
    }
    Ok(())
}

/// Writes bytes found at memory-file offset `at` to the guest addresses they belong to.
fn write_file_range(mem: &GuestMemory, snap: &MachineSnapshot, at: u64, bytes: &[u8]) -> Result<(), PersistError> {
    use vm_memory::Bytes;
    let mut done = 0usize;
    while done < bytes.len() {
        let off = at + done as u64;
        let r = snap
            .memory
            .iter()
            .find(|r| off >= r.file_offset && off < r.file_offset + r.size)
            .ok_or(PersistError::Layout)?;
        let in_region = usize::try_from(r.file_offset + r.size - off).unwrap_or(usize::MAX);
        let n = in_region.min(bytes.len() - done);
        let gpa = GuestAddress(r.guest_addr + (off - r.file_offset));
        mem.write_slice(&bytes[done..done + n], gpa)
            .map_err(|_| PersistError::Layout)?;
        done += n;
    }
    Ok(())
}

/// Maps the memory file privately (copy-on-write) at the saved guest addresses.
pub fn map_memory(snap: &MachineSnapshot, mem_path: &Path) -> Result<GuestMemory, PersistError> {
    let shown = mem_path.display().to_string();
    let file = File::options()
        .read(true)
        .open(mem_path)
        .map_err(|source| PersistError::MemoryOpen {
            path: shown.clone(),
            source,
        })?;
    let found = file
        .metadata()
        .map_err(|source| PersistError::MemoryOpen {
            path: shown.clone(),
            source,
        })?
        .len();
    let expected = snap.memory.iter().try_fold(0u64, |a, r| a.checked_add(r.size));
    let expected = expected.ok_or(PersistError::Layout)?;
    if found != expected {
        return Err(PersistError::MemorySize {
            path: shown,
            found,
            expected,
        });
    }
    let mut regions = Vec::with_capacity(snap.memory.len());
    for r in &snap.memory {
        let size = usize::try_from(r.size).map_err(|_| PersistError::Layout)?;
        let end = r.file_offset.checked_add(r.size).ok_or(PersistError::Layout)?;
        if end > found || size == 0 {
            return Err(PersistError::Layout);
        }
        let fo = FileOffset::new(
            file.try_clone().map_err(|source| PersistError::MemoryOpen {
                path: shown.clone(),
                source,
            })?,
            r.file_offset,
        );
        let mapping = MmapRegion::build(
            Some(fo),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(|source| PersistError::MemoryMap {
            path: shown.clone(),
            source,
        })?;
        regions.push(GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr)).ok_or(PersistError::Layout)?);
    }
    GuestMemory::from_regions(regions).map_err(|_| PersistError::Layout)
}

//! What each userfaultfd event gets: a missing page is copied from the memory file (or zeroed
//! if the guest gave it back earlier), an already-filled one only woken; a fault that races a
//! remove event (EAGAIN) waits for it. Keeps the counts `hearth uffd-handler` prints at exit.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use vmm::vstate::uffd::{Event, Uffd};
use vmm::vstate::uffd_backend::GuestRegionUffdMapping;

/// The memory file, mapped read-only.
pub struct MemFile {
    ptr: *const u8,
    len: u64,
}

impl MemFile {
    pub fn open(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let file = File::open(path).map_err(|e| format!("cannot open memory file {shown}: {e}"))?;
        let len = file
            .metadata()
            .map_err(|e| format!("cannot open memory file {shown}: {e}"))?
            .len();
        let size = usize::try_from(len)
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(|| format!("memory file {shown} is empty"))?;
        // SAFETY: a new read-only private mapping of a file we opened; the kernel picks the
        // address, so nothing else is overwritten. It is unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "cannot map memory file {shown}: {}",
                io::Error::last_os_error()
            ));
        }
        Ok(Self { ptr: ptr.cast(), len })
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `open`, unmapped only here.
        unsafe { libc::munmap(self.ptr.cast_mut().cast(), usize::try_from(self.len).unwrap_or(0)) };
    }
}

/// What the handler did, printed when it exits.
#[derive(Default, Debug, Clone, Copy)]
pub struct Counts {
    pub copied: u64,
    pub zeroed: u64,
    pub present: u64,
    pub removes: u64,
    pub failed: u64,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "served {} page faults ({} copied from the memory file, {} zero pages); {} already present, {} remove events, {} failed",
            self.copied + self.zeroed,
            self.copied,
            self.zeroed,
            self.present,
            self.removes,
            self.failed
        )
    }
}

pub struct Pages {
    file: MemFile,
    mappings: Vec<GuestRegionUffdMapping>,
    /// Host page addresses the guest gave back: their next fault gets zeros, not the file.
    removed: HashSet<u64>,
    /// Faults that met EAGAIN (the address space was changing), to retry.
    deferred: Vec<u64>,
    pub counts: Counts,
}

impl Pages {
    /// Checks that every mapping is page aligned and lies inside the memory file.
    pub fn new(file: MemFile, mappings: Vec<GuestRegionUffdMapping>, path: &Path) -> Result<Self, String> {
        for m in &mappings {
            let ps = m.page_size;
            let aligned = ps.is_power_of_two()
                && ps >= 4096
                && m.base_host_virt_addr % ps == 0
                && m.size % ps == 0
                && m.offset % ps == 0;
            let end = m.offset.checked_add(m.size);
            if !aligned || end.is_none_or(|e| e > file.len) {
                return Err(format!(
                    "region at {:#x} (+{:#x}, file offset {:#x}, page size {}) does not fit memory file {} ({} bytes)",
                    m.base_host_virt_addr,
                    m.size,
                    m.offset,
                    ps,
                    path.display(),
                    file.len
                ));
            }
        }
        Ok(Self {
            file,
            mappings,
            removed: HashSet::new(),
            deferred: Vec::new(),
            counts: Counts::default(),
        })
    }

    fn mapping(&self, addr: u64) -> Option<&GuestRegionUffdMapping> {
        self.mappings
            .iter()
            .find(|m| addr >= m.base_host_virt_addr && addr - m.base_host_virt_addr < m.size)
    }

    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    pub fn handle(&mut self, uffd: &Uffd, event: Event) {
        match event {
            Event::PageFault { addr } => self.fault(uffd, addr),
            Event::Remove { start, end } => {
                self.counts.removes += 1;
                let ps = self.mapping(start).map_or(4096, |m| m.page_size);
                let mut page = start & !(ps - 1);
                while page < end {
                    self.removed.insert(page);
                    let Some(next) = page.checked_add(ps) else { break };
                    page = next;
                }
            }
            Event::Other(e) => log::warn!("uffd-handler: ignoring userfaultfd event {e:#x}"),
        }
    }

    pub fn retry_deferred(&mut self, uffd: &Uffd) {
        for addr in std::mem::take(&mut self.deferred) {
            self.fault(uffd, addr);
        }
    }

    fn fault(&mut self, uffd: &Uffd, addr: u64) {
        let Some(m) = self.mapping(addr) else {
            self.counts.failed += 1;
            log::warn!("uffd-handler: fault at {addr:#x} outside every region");
            return;
        };
        let ps = m.page_size;
        let page = addr & !(ps - 1);
        let result = if self.removed.contains(&page) {
            uffd.zeropage(page, ps).map(|()| &mut self.counts.zeroed)
        } else {
            // In bounds: `new` checked offset + size <= file length for this mapping.
            let at = m.offset + (page - m.base_host_virt_addr);
            let src = self.file.ptr.wrapping_add(usize::try_from(at).unwrap_or(usize::MAX));
            // SAFETY: `src` .. `src + ps` lies inside the file mapping (see above).
            unsafe { uffd.copy(page, src, ps) }.map(|()| &mut self.counts.copied)
        };
        match result {
            Ok(counter) => *counter += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                // Filled meanwhile (another thread's fault on the same page): wake the waiter.
                self.counts.present += 1;
                if let Err(e) = uffd.wake(page, ps) {
                    log::warn!("uffd-handler: wake at {page:#x}: {e}");
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => self.deferred.push(addr),
            Err(e) => {
                self.counts.failed += 1;
                log::warn!("uffd-handler: cannot fill the page at {page:#x}: {e}");
            }
        }
    }
}

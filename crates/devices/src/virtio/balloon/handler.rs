//! What the balloon does with guest pages: turns the PFN arrays of inflate/deflate buffers into
//! ranges of contiguous pages ([`PfnRanges`]), and gives the host memory behind a guest range
//! back to the host ([`discard`], `madvise(MADV_DONTNEED)`: the pages read as zeros and are
//! faulted in again when the guest touches them).
//!
//! Guest memory is only reached through `vm-memory` (`get_slices`), which checks that the range
//! lies in guest RAM and splits it at region boundaries; the one `unsafe` call is the madvise.

use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, Permissions};

use crate::virtio::Memory;

/// virtio-balloon page size: PFNs are in 4 KiB units whatever the guest's page size
/// (virtio 1.2 §5.5.6, VIRTIO_BALLOON_PFN_SHIFT).
pub const PFN_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PFN_SHIFT;

/// Pages `start..start + count` (4 KiB PFNs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PfnRange {
    pub start: u64,
    pub count: u64,
}

/// Coalesces a stream of PFNs into ranges of consecutive pages, in the order given (Linux
/// gives ascending runs; duplicates or descending PFNs just start a new range).
#[derive(Default)]
pub struct PfnRanges {
    cur: Option<PfnRange>,
}

impl PfnRanges {
    /// Adds one PFN; returns the range it closed, if it did not extend the current one.
    pub fn push(&mut self, pfn: u32) -> Option<PfnRange> {
        let pfn = u64::from(pfn);
        match &mut self.cur {
            Some(r) if r.start + r.count == pfn => {
                r.count += 1;
                None
            }
            cur => cur.replace(PfnRange { start: pfn, count: 1 }),
        }
    }

    /// The last open range.
    pub fn finish(&mut self) -> Option<PfnRange> {
        self.cur.take()
    }
}

/// What happened to the pages of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageTally {
    /// Pages inside guest RAM (released to the host for inflate).
    pub pages: u64,
    /// PFNs outside guest RAM, ignored.
    pub outside: u64,
}

/// Reads the little-endian u32 PFNs of the device-readable buffers `bufs` and calls `range` for
/// each coalesced range, in chunks (no allocation per request). Returns false when a buffer
/// cannot be read (the chain was checked to lie in memory, so this is not expected).
pub fn for_each_range(
    mem: &Memory,
    bufs: impl Iterator<Item = (GuestAddress, u32)>,
    mut range: impl FnMut(PfnRange),
) -> bool {
    let mut ranges = PfnRanges::default();
    let mut chunk = [0u8; 1024];
    for (addr, len) in bufs {
        // A buffer holds whole PFNs (§5.5.6.1); a trailing partial one is ignored.
        let mut left = u64::from(len) & !3;
        let mut at = addr;
        while left > 0 {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(chunk.len());
            if mem.read_slice(&mut chunk[..n], at).is_err() {
                return false;
            }
            for b in chunk[..n].chunks_exact(4) {
                if let Some(r) = ranges.push(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) {
                    range(r);
                }
            }
            left -= n as u64;
            at = GuestAddress(at.0.wrapping_add(n as u64));
        }
    }
    if let Some(r) = ranges.finish() {
        range(r);
    }
    true
}

/// Releases the host memory behind guest pages `r`. Pages outside guest RAM are skipped and
/// counted (a range that is not wholly in RAM is done page by page).
pub fn release_pfns(mem: &Memory, r: PfnRange) -> PageTally {
    let Some((addr, len)) = byte_range(r.start, r.count) else {
        return PageTally {
            pages: 0,
            outside: r.count,
        };
    };
    match discard(mem, addr, len) {
        Err(DiscardError::Outside { .. }) => {}
        done => {
            warn_failed(done);
            return PageTally {
                pages: r.count,
                outside: 0,
            };
        }
    }
    let mut t = PageTally::default();
    for pfn in r.start..r.start + r.count {
        match byte_range(pfn, 1).map(|(a, l)| discard(mem, a, l)) {
            None | Some(Err(DiscardError::Outside { .. })) => t.outside += 1,
            Some(done) => {
                warn_failed(done);
                t.pages += 1;
            }
        }
    }
    t
}

/// A failed madvise leaves the pages resident: a lost saving, not an error for the guest.
fn warn_failed(r: Result<(), DiscardError>) {
    if let Err(e) = r {
        ::virtio::guest_warn(format_args!("virtio-balloon: {e}"));
    }
}

fn byte_range(start_pfn: u64, count: u64) -> Option<(GuestAddress, usize)> {
    let addr = start_pfn.checked_mul(PAGE_SIZE)?;
    let len = usize::try_from(count.checked_mul(PAGE_SIZE)?).ok()?;
    addr.checked_add(u64::try_from(len).ok()?)?;
    Some((GuestAddress(addr), len))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscardError {
    #[error("guest range {addr:#x}+{len:#x} is not in guest RAM")]
    Outside { addr: u64, len: usize },
    #[error("madvise(MADV_DONTNEED) of guest range {addr:#x}+{len:#x} failed: errno {errno}")]
    Madvise { addr: u64, len: usize, errno: i32 },
}

/// `madvise(MADV_DONTNEED)` on the host memory behind guest `addr..addr + len`, shrunk inwards
/// to whole host pages (a partial page is left alone). Guest memory is private anonymous
/// memory, so the pages are freed at once and read back as zeros.
pub fn discard(mem: &Memory, addr: GuestAddress, len: usize) -> Result<(), DiscardError> {
    let outside = DiscardError::Outside { addr: addr.0, len };
    if len == 0 {
        return Ok(());
    }
    if !GuestMemory::check_range(mem, addr, len, Permissions::ReadWrite) {
        return Err(outside);
    }
    let page = host_page_size();
    for slice in GuestMemoryBackend::get_slices(mem, addr, len) {
        let slice = slice.map_err(|_| DiscardError::Outside { addr: addr.0, len })?;
        let guard = slice.ptr_guard_mut();
        let ptr = guard.as_ptr() as usize;
        let (start, end) = (ptr.next_multiple_of(page), (ptr + slice.len()) / page * page);
        if end <= start {
            continue;
        }
        // The guest gave these pages up. MADV_DONTNEED on a private mapping (anonymous, or a
        // restored snapshot's memory file) drops hearth's copy: the next touch reads zeros or the
        // file's page. No Rust reference into guest memory exists (only volatile copies).
        // SAFETY: start..end lies inside `slice`, a live guest mapping vm-memory checked.
        let r = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if r != 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return Err(DiscardError::Madvise {
                addr: addr.0,
                len,
                errno,
            });
        }
    }
    Ok(())
}

fn host_page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;

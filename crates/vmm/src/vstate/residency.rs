//! How much memory the VMM process uses beyond the guest's own RAM: process RSS versus the
//! guest pages actually resident (mincore over each guest memory region).

use crate::vstate::memory::GuestMemory;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Resident set size of the whole process.
    pub rss_bytes: u64,
    /// Guest RAM pages resident in host memory.
    pub guest_resident_bytes: u64,
}

impl MemoryUsage {
    /// RSS not explained by resident guest RAM: the VMM's own overhead.
    pub fn overhead_bytes(&self) -> u64 {
        self.rss_bytes.saturating_sub(self.guest_resident_bytes)
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// Process RSS from /proc/self/statm (second field, in pages).
pub fn process_rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * page_size()
}

/// Bytes of guest RAM resident in host memory.
pub fn guest_resident(memory: &GuestMemory) -> u64 {
    let page = page_size();
    let mut total = 0;
    for region in memory.iter() {
        let len = usize::try_from(region.len()).unwrap_or(0);
        let pages = len.div_ceil(usize::try_from(page).unwrap_or(4096));
        let mut vec = vec![0u8; pages];
        // SAFETY: the region is a live mapping of `len` bytes; `vec` has one byte per page.
        let r = unsafe { libc::mincore(region.as_ptr().cast(), len, vec.as_mut_ptr()) };
        if r == 0 {
            total += vec.iter().filter(|b| **b & 1 != 0).count() as u64 * page;
        }
    }
    total
}

pub fn measure(memory: &GuestMemory) -> MemoryUsage {
    MemoryUsage {
        rss_bytes: process_rss(),
        guest_resident_bytes: guest_resident(memory),
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn touched_guest_pages_become_resident() {
        let m = GuestMemory::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let before = guest_resident(&m);
        for i in 0..256u64 {
            m.write_obj(1u8, GuestAddress(i * 4096)).unwrap();
        }
        let after = guest_resident(&m);
        assert!(after >= before + 256 * 4096, "{before} -> {after}");
        assert!(after < 64 << 20);
        assert!(process_rss() >= after);
    }
}

//! Guest RAM: anonymous private mappings laid out around the 32-bit MMIO gap.

use vm_memory::GuestAddress;

/// Guest RAM as hearth maps it: vm-memory regions with a dirty bitmap that records every
/// write hearth itself makes (device DMA), for diff snapshots (KVM logs the guest's own).
pub type GuestMemory = virtio::Memory;

use crate::arch::layout::ram_regions;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory size must be at least 1 MiB, got {0} bytes")]
    TooSmall(u64),
    #[error("cannot map {size} MiB of guest memory")]
    Map {
        size: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Smallest guest hearth builds: the boot structures live below 1 MiB.
pub const MIN_MEM_SIZE: u64 = 1 << 20;

pub fn create_guest_memory(mem_size: u64) -> Result<GuestMemory, MemoryError> {
    if mem_size < MIN_MEM_SIZE {
        return Err(MemoryError::TooSmall(mem_size));
    }
    let ranges: Vec<(GuestAddress, usize)> = ram_regions(mem_size)
        .into_iter()
        .map(|(base, size)| (GuestAddress(base), usize::try_from(size).unwrap_or(usize::MAX)))
        .collect();
    GuestMemory::from_ranges(&ranges).map_err(|source| MemoryError::Map {
        size: mem_size >> 20,
        source,
    })
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn maps_regions_and_rejects_tiny() {
        let m = create_guest_memory(16 << 20).unwrap();
        assert_eq!(m.num_regions(), 1);
        m.write_obj(0xdead_beefu32, GuestAddress((16 << 20) - 4)).unwrap();
        assert!(m.write_obj(1u32, GuestAddress(16 << 20)).is_err());
        assert!(matches!(create_guest_memory(4096), Err(MemoryError::TooSmall(4096))));
    }
}

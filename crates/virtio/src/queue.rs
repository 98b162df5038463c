//! Taking descriptor chains off a split virtqueue, checked (virtio 1.2 §2.7).
//!
//! `virtio-queue` walks the rings; what it does not do is tell a device that a chain was cut
//! short (a loop, a `next` past the table, an unreadable descriptor all just end its iterator).
//! [`pop_chain`] turns every such case into a [`ChainError`], so a device can treat a malicious
//! or broken driver as what it is (mark itself DEVICE_NEEDS_RESET) and never act on half a chain.

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemory, Permissions};

use crate::Memory;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("bad available ring")]
    Ring(#[source] virtio_queue::Error),
    #[error("descriptor chain at head {0} is empty or cut short (loop, bad next index or indirect table)")]
    Truncated(u16),
    #[error("descriptor chain at head {head}: buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutOfMemory { head: u16, addr: u64, len: u32 },
    #[error("descriptor chain at head {0}: a device-readable buffer follows a device-writable one")]
    WriteBeforeRead(u16),
}

/// Pops the next available chain into `descs` (cleared first; reused to avoid an allocation
/// per request) and returns its head index, or `None` when the driver made nothing new available.
pub fn pop_chain(queue: &mut Queue, mem: &Memory, descs: &mut Vec<Descriptor>) -> Result<Option<u16>, ChainError> {
    descs.clear();
    let mut iter = queue.iter(mem).map_err(ChainError::Ring)?;
    let Some(chain) = iter.next() else {
        return Ok(None);
    };
    let head = chain.head_index();
    // The iterator stops by itself after as many descriptors as the table holds (its TTL), so
    // a looping chain ends here too, with a last descriptor that still says "next".
    descs.extend(chain);
    match descs.last() {
        Some(last) if !last.has_next() => {}
        _ => return Err(ChainError::Truncated(head)),
    }
    let mut seen_write = false;
    for d in descs.iter() {
        if d.is_write_only() {
            seen_write = true;
        } else if seen_write {
            return Err(ChainError::WriteBeforeRead(head));
        }
        if !in_memory(mem, d.addr(), d.len()) {
            return Err(ChainError::OutOfMemory {
                head,
                addr: d.addr().0,
                len: d.len(),
            });
        }
    }
    Ok(Some(head))
}

fn in_memory(mem: &Memory, addr: GuestAddress, len: u32) -> bool {
    let Ok(len) = usize::try_from(len) else { return false };
    len == 0 || GuestMemory::check_range(mem, addr, len, Permissions::ReadWrite)
}

/// Checks that every ready queue lies in guest memory (virtio-queue's `is_valid`).
pub fn queues_valid(queues: &[Queue], mem: &Memory) -> Result<(), usize> {
    match queues.iter().position(|q| q.ready() && !q.is_valid(mem)) {
        Some(i) => Err(i),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::Bytes;

    const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;

    fn mem() -> Memory {
        Memory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    #[test]
    fn pops_a_good_chain_then_nothing() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        vq.add_desc_chains(
            &[
                desc(0x8000, 16, F_NEXT, 1),
                desc(0x9000, 512, F_NEXT | F_WRITE, 2),
                desc(0xa000, 1, F_WRITE, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let mut descs = Vec::new();
        assert_eq!(pop_chain(&mut q, &m, &mut descs).unwrap(), Some(0));
        assert_eq!(descs.len(), 3);
        assert!(descs[2].is_write_only());
        assert_eq!(pop_chain(&mut q, &m, &mut descs).unwrap(), None);
    }

    #[test]
    fn a_looping_chain_is_an_error_not_a_hang() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 4);
        // 0 -> 1 -> 0 -> ...; add_desc_chains keeps our next fields.
        vq.add_desc_chains(&[desc(0x8000, 16, F_NEXT, 1), desc(0x9000, 16, F_NEXT, 0)], 0)
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let mut descs = Vec::new();
        assert!(matches!(
            pop_chain(&mut q, &m, &mut descs),
            Err(ChainError::Truncated(0))
        ));
    }

    #[test]
    fn next_past_the_table_is_an_error() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 4);
        vq.add_desc_chains(&[desc(0x8000, 16, F_NEXT, 9)], 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(matches!(
            pop_chain(&mut q, &m, &mut Vec::new()),
            Err(ChainError::Truncated(0))
        ));
    }

    #[test]
    fn buffers_outside_memory_and_huge_lengths_are_errors() {
        for (addr, len) in [
            (0x20_0000u64, 16u32),
            (0x8000, u32::MAX),
            (u64::MAX - 4, 16),
            (0xf_fff0, 0x20),
        ] {
            let m = mem();
            let vq = MockSplitQueue::new(&m, 4);
            vq.add_desc_chains(&[desc(addr, len, 0, 0)], 0).unwrap();
            let mut q: Queue = vq.create_queue().unwrap();
            assert!(
                matches!(
                    pop_chain(&mut q, &m, &mut Vec::new()),
                    Err(ChainError::OutOfMemory { .. })
                ),
                "{addr:#x}+{len:#x}"
            );
        }
    }

    #[test]
    fn readable_after_writable_is_an_error() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 4);
        vq.add_desc_chains(&[desc(0x8000, 16, F_NEXT | F_WRITE, 1), desc(0x9000, 16, 0, 0)], 0)
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(matches!(
            pop_chain(&mut q, &m, &mut Vec::new()),
            Err(ChainError::WriteBeforeRead(0))
        ));
    }

    #[test]
    fn avail_index_jumping_ahead_is_an_error() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 4);
        let mut q: Queue = vq.create_queue().unwrap();
        // 100 new entries in a ring of 4.
        vq.avail().idx().store(100);
        assert!(matches!(
            pop_chain(&mut q, &m, &mut Vec::new()),
            Err(ChainError::Ring(_))
        ));
    }

    #[test]
    fn indirect_tables_are_followed_and_checked() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 4);
        // A good indirect table of two descriptors at 0x5000.
        m.write_obj(desc(0x8000, 16, F_NEXT, 1), GuestAddress(0x5000)).unwrap();
        m.write_obj(desc(0x9000, 1, F_WRITE, 0), GuestAddress(0x5010)).unwrap();
        vq.add_desc_chains(&[desc(0x5000, 32, VRING_DESC_F_INDIRECT as u16, 0)], 0)
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let mut descs = Vec::new();
        assert_eq!(pop_chain(&mut q, &m, &mut descs).unwrap(), Some(0));
        assert_eq!(descs.len(), 2);
        // An indirect table that loops on itself.
        m.write_obj(desc(0x8000, 16, F_NEXT, 0), GuestAddress(0x5000)).unwrap();
        vq.add_desc_chains(&[desc(0x5000, 32, VRING_DESC_F_INDIRECT as u16, 0)], 1)
            .unwrap();
        assert!(matches!(
            pop_chain(&mut q, &m, &mut descs),
            Err(ChainError::Truncated(1))
        ));
        // An indirect table outside memory.
        vq.add_desc_chains(&[desc(0xff_0000_0000, 32, VRING_DESC_F_INDIRECT as u16, 0)], 2)
            .unwrap();
        assert!(matches!(
            pop_chain(&mut q, &m, &mut descs),
            Err(ChainError::Truncated(2))
        ));
    }
}

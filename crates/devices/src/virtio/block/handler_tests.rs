//! virtio-blk requests against a temporary image and mock guest memory and queue.

#![allow(clippy::cast_possible_truncation)]

use std::io::{Read, Write};
use std::sync::Arc;

use ::virtio::interrupt::CountingTrigger;
use ::virtio::{Activated, VirtioDevice, VirtioInterrupt};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;

use super::super::Block;
use super::*;

const HDR: u64 = 0x8000;
const DATA: u64 = 0x1_0000;
const STATUS: u64 = 0x9000;
const R: u32 = VRING_DESC_F_NEXT;
const W: u32 = VRING_DESC_F_NEXT | VRING_DESC_F_WRITE;

fn desc(addr: u64, len: u32, flags: u32) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags as u16, 0))
}

fn image(sectors: u64) -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!(
        "hearth-blk-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let pattern: Vec<u8> = (0..sectors * SECTOR_SIZE).map(|i| (i % 251) as u8).collect();
    f.write_all(&pattern).unwrap();
    (path, f)
}

struct Rig {
    mem: Memory,
    blk: Block,
    irq: Arc<CountingTrigger>,
    /// Avail and used ring addresses of the mock queue (its descriptor table is at 0).
    rings: (u64, u64),
    path: std::path::PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn rig(read_only: bool) -> Rig {
    rig_sized(read_only, 8)
}

fn rig_sized(read_only: bool, sectors: u64) -> Rig {
    let mem = Memory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let (path, f) = image(sectors);
    let mut blk = Block::new(f, read_only, "disk0").unwrap();
    let irq = Arc::new(CountingTrigger::default());
    blk.set_acked_features(blk.avail_features());
    let vq = MockSplitQueue::new(&mem, 16);
    let q: Queue = vq.create_queue().unwrap();
    let rings = (vq.avail_addr().0, vq.used_addr().0);
    blk.activate(Activated {
        mem: mem.clone(),
        interrupt: VirtioInterrupt::new(irq.clone()),
        queues: vec![q],
    })
    .unwrap();
    Rig {
        mem,
        blk,
        irq,
        rings,
        path,
    }
}

/// Submits one request (header + `data` + status) and returns (status byte, used length).
fn submit(g: &mut Rig, kind: u32, sector: u64, data: &[RawDescriptor]) -> (u8, u32) {
    g.mem.write_obj(kind, GuestAddress(HDR)).unwrap();
    g.mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
    g.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    let mut chain = vec![desc(HDR, 16, R)];
    chain.extend_from_slice(data);
    chain.push(desc(STATUS, 1, VRING_DESC_F_WRITE));
    // Drive the rings by hand (a new MockSplitQueue would zero them); descriptor i links to i + 1.
    for (i, d) in chain.iter().enumerate() {
        let d = Descriptor::from(*d);
        let d = RawDescriptor::from(Descriptor::new(d.addr().0, d.len(), d.flags(), i as u16 + 1));
        g.mem.write_obj(d, GuestAddress(16 * i as u64)).unwrap();
    }
    let (avail, used) = (g.rings.0, g.rings.1);
    let idx: u16 = g.mem.read_obj(GuestAddress(avail + 2)).unwrap();
    g.mem
        .write_obj(0u16, GuestAddress(avail + 4 + 2 * u64::from(idx % 16)))
        .unwrap();
    g.mem.write_obj(idx.wrapping_add(1), GuestAddress(avail + 2)).unwrap();
    g.blk.process_queue(0);
    assert!(!g.blk.common().is_broken(), "device broke");
    let used_idx: u16 = g.mem.read_obj(GuestAddress(used + 2)).unwrap();
    assert_eq!(used_idx, idx.wrapping_add(1), "request not completed");
    let len: u32 = g
        .mem
        .read_obj(GuestAddress(used + 4 + 8 * u64::from(idx % 16) + 4))
        .unwrap();
    (g.mem.read_obj(GuestAddress(STATUS)).unwrap(), len)
}

fn image_bytes(g: &Rig) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(&g.path).unwrap().read_to_end(&mut v).unwrap();
    v
}

#[test]
fn reads_writes_flushes_and_ids() {
    let mut g = rig(false);
    assert_eq!(g.blk.sectors(), 8);
    assert_eq!(&g.blk.config_space()[0..8], &8u64.to_le_bytes());
    // Read sectors 1..3 into two buffers.
    let (s, len) = submit(
        &mut g,
        VIRTIO_BLK_T_IN,
        1,
        &[desc(DATA, 512, W), desc(DATA + 0x1000, 512, W)],
    );
    assert_eq!((s, len), (0, 1025));
    let mut buf = [0u8; 512];
    g.mem.read_slice(&mut buf, GuestAddress(DATA + 0x1000)).unwrap();
    assert_eq!(buf[0], (1024 % 251) as u8);
    // Write sector 7.
    g.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(submit(&mut g, VIRTIO_BLK_T_OUT, 7, &[desc(DATA, 512, R)]), (0, 1));
    assert_eq!(submit(&mut g, VIRTIO_BLK_T_FLUSH, 0, &[]), (0, 1));
    assert!(image_bytes(&g)[7 * 512..].iter().all(|&b| b == 0x5a));
    // GET_ID
    assert_eq!(submit(&mut g, VIRTIO_BLK_T_GET_ID, 0, &[desc(DATA, 20, W)]), (0, 21));
    let mut id = [0u8; 20];
    g.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..6], b"disk0\0");
    assert!(g.irq.count() >= 4);
    let m = g.blk.metrics();
    assert_eq!((m.read_count.get(), m.read_bytes.get()), (1, 1024));
    assert_eq!((m.write_count.get(), m.write_bytes.get()), (1, 512));
    assert_eq!((m.flush_count.get(), m.execute_fails.get()), (1, 0));
    assert_eq!(m.queue_event_count.get(), 4);
}

#[test]
fn past_the_end_read_only_and_unknown_requests_fail_cleanly() {
    let mut g = rig(true);
    assert_ne!(g.blk.avail_features() & (1 << 5), 0, "F_RO offered");
    let before = image_bytes(&g);
    g.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(
        submit(&mut g, VIRTIO_BLK_T_OUT, 0, &[desc(DATA, 512, R)]).0,
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(image_bytes(&g), before, "a read-only image is never written");
    assert_eq!(
        submit(&mut g, VIRTIO_BLK_T_IN, 8, &[desc(DATA, 512, W)]).0,
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(
        submit(&mut g, VIRTIO_BLK_T_IN, 7, &[desc(DATA, 1024, W)]).0,
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(
        submit(&mut g, VIRTIO_BLK_T_IN, u64::MAX / 2, &[desc(DATA, 512, W)]).0,
        VIRTIO_BLK_S_IOERR as u8
    );
    assert_eq!(submit(&mut g, 99, 0, &[]).0, VIRTIO_BLK_S_UNSUPP as u8);
    // IN with a device-readable data buffer is malformed: completed with nothing written.
    assert_eq!(submit(&mut g, VIRTIO_BLK_T_IN, 0, &[desc(DATA, 512, R)]), (0xff, 0));
    assert!(!g.blk.common().is_broken());
    let m = g.blk.metrics();
    assert_eq!((m.execute_fails.get(), m.invalid_reqs_count.get()), (5, 1));
    assert_eq!(
        m.read_bytes.get() + m.write_bytes.get(),
        0,
        "failed requests move no bytes"
    );
}

#[test]
fn a_looping_chain_marks_the_device_broken() {
    let mut g = rig(false);
    let vq = MockSplitQueue::new(&g.mem, 16);
    vq.add_desc_chains(
        &[
            RawDescriptor::from(Descriptor::new(HDR, 16, R as u16, 1)),
            RawDescriptor::from(Descriptor::new(DATA, 16, R as u16, 0)),
        ],
        0,
    )
    .unwrap();
    g.blk.process_queue(0);
    assert!(g.blk.common().is_broken());
    assert_eq!(g.irq.count(), 1, "config interrupt");
}

#[path = "discard_tests.rs"]
mod discard;

#[path = "rate_limit_tests.rs"]
mod rate_limit;

//! A rate-limited drive stops taking requests when its budget is spent and takes them again
//! when the limiter's timer fires (the clock is moved by hand).

use std::time::Duration;

use crate::rate_limiter::{Limits, ManualClock};

use super::*;

/// Makes a one-sector read of `sector` available in ring slot `slot` (descriptors 3*slot..,
/// status byte at STATUS + slot) without running the queue.
fn queue_read(g: &Rig, slot: u16, sector: u64) {
    let hdr = HDR + 16 * u64::from(slot);
    g.mem.write_obj(VIRTIO_BLK_T_IN, GuestAddress(hdr)).unwrap();
    g.mem.write_obj(sector, GuestAddress(hdr + 8)).unwrap();
    let first = 3 * slot;
    let chain = [
        Descriptor::new(hdr, 16, R as u16, first + 1),
        Descriptor::new(DATA + 512 * u64::from(slot), 512, W as u16, first + 2),
        Descriptor::new(STATUS + u64::from(slot), 1, VRING_DESC_F_WRITE as u16, 0),
    ];
    for (i, d) in (first..).zip(chain) {
        g.mem
            .write_obj(RawDescriptor::from(d), GuestAddress(16 * u64::from(i)))
            .unwrap();
    }
    let avail = g.rings.0;
    g.mem
        .write_obj(first, GuestAddress(avail + 4 + 2 * u64::from(slot)))
        .unwrap();
    g.mem.write_obj(slot + 1, GuestAddress(avail + 2)).unwrap();
}

fn used_idx(g: &Rig) -> u16 {
    g.mem.read_obj(GuestAddress(g.rings.1 + 2)).unwrap()
}

#[test]
fn a_throttled_drive_pauses_and_resumes_on_its_timer() {
    let mut g = rig(false);
    let clock = ManualClock::default();
    let limits = Limits {
        iops: 10,
        iops_burst: 2,
        ..Limits::default()
    };
    g.blk.set_rate_limit(limits, Box::new(clock.clone())).unwrap();
    assert!(g.blk.rate_limit_fd().is_some());
    for slot in 0..5 {
        queue_read(&g, slot, u64::from(slot));
    }
    g.blk.process_queue(0);
    assert_eq!(used_idx(&g), 2, "the burst of two requests, then throttled");
    // A guest kick while throttled changes nothing.
    g.blk.process_queue(0);
    assert_eq!(used_idx(&g), 2);
    // 10 ops/s: one more request every 100 ms.
    clock.advance(Duration::from_millis(100));
    g.blk.rate_limit_timer_fired();
    assert_eq!(used_idx(&g), 3);
    clock.advance(Duration::from_millis(250));
    g.blk.rate_limit_timer_fired();
    assert_eq!(used_idx(&g), 5, "two more tokens after 200 ms (and change)");
    for slot in 0..5u64 {
        let status: u8 = g.mem.read_obj(GuestAddress(STATUS + slot)).unwrap();
        assert_eq!(status, 0, "request {slot} completed OK");
        let mut sector = [0u8; 512];
        g.mem.read_slice(&mut sector, GuestAddress(DATA + 512 * slot)).unwrap();
        assert_eq!(sector[0], ((512 * slot) % 251) as u8, "request {slot} read its sector");
    }
}

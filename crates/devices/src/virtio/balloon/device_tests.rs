//! The balloon device against mock queues in real guest memory: queue numbering, inflate and
//! deflate, free page reporting, the stats protocol, config space, and broken rings.

#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;

use ::virtio::interrupt::CountingTrigger;
use ::virtio::VirtioInterrupt;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::Memory;

const MIB: u64 = 1 << 20;

fn mem() -> Memory {
    Memory::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
}

fn desc(addr: u64, len: u32, flags: u32) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags as u16, 0))
}

struct Rig<'a> {
    dev: Balloon,
    irq: Arc<CountingTrigger>,
    interrupt: VirtioInterrupt,
    vqs: Vec<MockSplitQueue<'a, Memory>>,
}

/// A balloon on a 16 MiB guest, activated with `acked` features and one mock queue per
/// queue the device offers (each ring in its own 64 KiB, above 8 MiB).
fn rig(m: &Memory, cfg: BalloonConfig, acked: u64) -> Rig<'_> {
    let mut dev = Balloon::new(cfg, 16).unwrap();
    dev.set_acked_features(acked | ::virtio::features::VERSION_1);
    let vqs: Vec<_> = (0..dev.queue_max_sizes().len())
        .map(|i| MockSplitQueue::create(m, GuestAddress(8 * MIB + i as u64 * 0x1_0000), 16))
        .collect();
    let queues: Vec<Queue> = vqs.iter().map(|vq| vq.create_queue().unwrap()).collect();
    let irq = Arc::new(CountingTrigger::default());
    let interrupt = VirtioInterrupt::new(irq.clone());
    dev.activate(Activated {
        mem: m.clone(),
        interrupt: interrupt.clone(),
        queues,
    })
    .unwrap();
    Rig {
        dev,
        irq,
        interrupt,
        vqs,
    }
}

fn put_pfns(m: &Memory, vq: &MockSplitQueue<'_, Memory>, at: u64, pfns: &[u32], slot: u16) {
    let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
    m.write_slice(&bytes, GuestAddress(at)).unwrap();
    vq.add_desc_chains(&[desc(at, bytes.len() as u32, 0)], slot).unwrap();
}

const STATS: u64 = 1 << F_STATS_VQ;
const REPORTING: u64 = 1 << F_REPORTING;

#[test]
fn queue_numbering_follows_the_negotiated_features() {
    let l = |f| QueueLayout::for_features(f);
    assert_eq!(
        l(0),
        QueueLayout {
            stats: None,
            reporting: None
        }
    );
    assert_eq!(
        l(STATS),
        QueueLayout {
            stats: Some(2),
            reporting: None
        }
    );
    assert_eq!(
        l(REPORTING),
        QueueLayout {
            stats: None,
            reporting: Some(2)
        }
    );
    assert_eq!(
        l(STATS | REPORTING),
        QueueLayout {
            stats: Some(2),
            reporting: Some(3)
        }
    );
    // Free page hinting (not offered by hearth) would sit between them.
    assert_eq!(
        l(STATS | REPORTING | (1 << F_FREE_PAGE_HINT)),
        QueueLayout {
            stats: Some(2),
            reporting: Some(4)
        }
    );
}

#[test]
fn offers_the_configured_features_and_queues() {
    let plain = Balloon::new(BalloonConfig::default(), 64).unwrap();
    assert_eq!(plain.device_type(), 5);
    assert_eq!(plain.avail_features() & 0xff, STATS);
    assert_eq!(plain.queue_max_sizes().len(), 3);
    let all = BalloonConfig {
        deflate_on_oom: true,
        free_page_reporting: true,
        ..Default::default()
    };
    let full = Balloon::new(all, 64).unwrap();
    assert_eq!(
        full.avail_features() & 0xff,
        STATS | REPORTING | (1 << F_DEFLATE_ON_OOM)
    );
    assert_eq!(full.queue_max_sizes().len(), 4);
}

#[test]
fn target_and_actual_live_in_the_config_space() {
    let m = mem();
    let cfg = BalloonConfig {
        amount_mib: 4,
        ..Default::default()
    };
    let mut r = rig(&m, cfg, STATS);
    assert_eq!(&r.dev.config_space()[0..4], &1024u32.to_le_bytes());
    r.dev.set_target_mib(8).unwrap();
    assert_eq!(r.dev.target_pages(), 2048);
    assert_eq!(
        r.interrupt.status() & ::virtio::interrupt::INT_CONFIG,
        ::virtio::interrupt::INT_CONFIG
    );
    assert!(matches!(
        r.dev.set_target_mib(17),
        Err(BalloonError::TooLarge { asked: 17, guest: 16 })
    ));
    // The driver writes actual; num_pages and the rest are not its to write.
    r.dev.write_config(4, &512u32.to_le_bytes());
    r.dev.write_config(0, &1u32.to_le_bytes());
    r.dev.write_config(6, &[0, 0, 0, 0]);
    assert_eq!(r.dev.actual_pages(), 512);
    assert_eq!(r.dev.target_pages(), 2048);
}

#[test]
fn inflate_releases_pages_ignores_pfns_outside_memory_and_deflate_counts() {
    let m = mem();
    let mut r = rig(&m, BalloonConfig::default(), STATS);
    m.write_slice(&vec![0x5a; 0x8000], GuestAddress(0x10_0000)).unwrap();
    // Pages 0x100..0x104 and 0x106, plus two PFNs past the 16 MiB of RAM.
    put_pfns(
        &m,
        &r.vqs[0],
        0x4000,
        &[0x100, 0x101, 0x102, 0x103, 0x106, 0x9_0000, 0xffff_ffff],
        0,
    );
    r.dev.process_queue(0);
    assert_eq!(r.vqs[0].used().idx().load(), 1);
    let mut b = vec![1u8; 0x7000];
    m.read_slice(&mut b, GuestAddress(0x10_0000)).unwrap();
    assert!(b[..0x4000].iter().all(|&x| x == 0), "inflated pages released");
    assert!(b[0x4000..0x6000].iter().all(|&x| x == 0x5a), "pages 0x104, 0x105 kept");
    assert!(b[0x6000..].iter().all(|&x| x == 0));
    let c = r.dev.counters();
    assert_eq!((c.inflated_pages, c.ignored_pfns), (5, 2));
    assert_eq!(r.irq.count(), 1);

    put_pfns(&m, &r.vqs[1], 0x5000, &[0x100, 0x101], 0);
    r.dev.process_queue(1);
    assert_eq!(r.vqs[1].used().idx().load(), 1);
    assert_eq!(r.dev.counters().deflated_pages, 2);
}

#[test]
fn reported_free_pages_are_released_and_returned() {
    let m = mem();
    // Without STATS_VQ the reporting queue is index 2.
    let cfg = BalloonConfig {
        free_page_reporting: true,
        ..Default::default()
    };
    let mut r = rig(&m, cfg, REPORTING);
    m.write_slice(&vec![0x77; 0x40_0000], GuestAddress(0x40_0000)).unwrap();
    let w = VRING_DESC_F_WRITE;
    r.vqs[2]
        .add_desc_chains(
            &[
                RawDescriptor::from(Descriptor::new(0x40_0000, 0x20_0000, (w | VRING_DESC_F_NEXT) as u16, 1)),
                desc(0x60_0000, 0x20_0000, w),
            ],
            0,
        )
        .unwrap();
    r.dev.process_queue(2);
    assert!(!r.dev.common().is_broken());
    assert_eq!(r.vqs[2].used().idx().load(), 1);
    assert_eq!(r.dev.counters().reported_bytes, 0x40_0000);
    let mut b = vec![1u8; 0x40_0000];
    m.read_slice(&mut b, GuestAddress(0x40_0000)).unwrap();
    assert!(b.iter().all(|&x| x == 0));
}

fn stat(tag: u16, val: u64) -> Vec<u8> {
    let mut v = tag.to_le_bytes().to_vec();
    v.extend_from_slice(&val.to_le_bytes());
    v
}

#[test]
fn stats_buffer_is_kept_until_the_timer_returns_it() {
    let m = mem();
    let cfg = BalloonConfig {
        amount_mib: 2,
        ..Default::default()
    };
    let mut r = rig(&m, cfg, STATS);
    assert_eq!(r.dev.stats(), None, "nothing before the driver sends a buffer");
    // Activation schedules a look at the stats queue (Linux kicks it before DRIVER_OK).
    assert_eq!(r.dev.queue_evts()[2].read().unwrap(), 1);
    let mut bytes = stat(4, 1000 * 4096);
    bytes.extend(stat(5, 12 * MIB));
    m.write_slice(&bytes, GuestAddress(0x6000)).unwrap();
    r.vqs[2]
        .add_desc_chains(&[desc(0x6000, bytes.len() as u32, 0)], 0)
        .unwrap();
    r.dev.process_queue(2);
    assert_eq!(r.vqs[2].used().idx().load(), 0, "the device holds the stats buffer");
    r.dev.write_config(4, &256u32.to_le_bytes());
    let s = r.dev.stats().unwrap();
    assert_eq!((s.free_memory, s.total_memory), (Some(1000 * 4096), Some(12 * MIB)));
    assert_eq!(
        (s.target_pages, s.target_mib, s.actual_pages, s.actual_mib),
        (512, 2, 256, 1)
    );

    r.dev.stats_timer_fired();
    assert_eq!(r.vqs[2].used().idx().load(), 1, "a poll returns it");
    assert_eq!(r.irq.count(), 1);
    r.dev.stats_timer_fired();
    assert_eq!(r.vqs[2].used().idx().load(), 1, "nothing held, nothing returned");

    // The driver refills with fresh numbers.
    m.write_slice(&stat(4, 7), GuestAddress(0x6000)).unwrap();
    r.vqs[2].add_desc_chains(&[desc(0x6000, 10, 0)], 1).unwrap();
    r.dev.process_queue(2);
    assert_eq!(r.dev.stats().unwrap().free_memory, Some(7));
    assert_eq!(r.dev.counters().stats_updates, 2);
}

#[test]
fn a_broken_ring_fails_the_device_instead_of_panicking() {
    let m = mem();
    let mut r = rig(&m, BalloonConfig::default(), STATS);
    // A descriptor chain that loops, and an avail index far ahead of the ring.
    r.vqs[0]
        .add_desc_chains(
            &[RawDescriptor::from(Descriptor::new(
                0x4000,
                4,
                VRING_DESC_F_NEXT as u16,
                0,
            ))],
            0,
        )
        .unwrap();
    r.dev.process_queue(0);
    assert!(r.dev.common().is_broken());
    let mut r = rig(&m, BalloonConfig::default(), STATS);
    r.vqs[2].avail().idx().store(100);
    r.dev.process_queue(2);
    assert!(r.dev.common().is_broken());
    // Kicks on queues the driver has not got are ignored.
    let mut r = rig(&m, BalloonConfig::default(), STATS);
    r.dev.process_queue(3);
    r.dev.process_queue(usize::MAX);
    assert!(!r.dev.common().is_broken());
}

#[test]
fn snapshot_state_round_trips_and_bad_state_is_refused() {
    let cfg = BalloonConfig {
        amount_mib: 8,
        stats_polling_interval_s: 3,
        ..Default::default()
    };
    let mut dev = Balloon::new(cfg, 64).unwrap();
    dev.write_config(4, &100u32.to_le_bytes()); // the driver's `actual`
    let saved = dev.save_device();
    let mut back = Balloon::new(BalloonConfig::default(), 64).unwrap();
    back.restore_device(&saved).unwrap();
    back.on_restored();
    assert_eq!(back.save_device(), saved);
    assert_eq!((back.target_pages(), back.actual_pages()), (8 * 256, 100));
    assert_eq!(back.config().stats_polling_interval_s, 3);
    let mut short = saved.clone();
    short.pop();
    assert!(back.restore_device(&short).is_err());
    let mut bad_head = saved.clone();
    bad_head[14] = 1;
    bad_head[15..17].copy_from_slice(&999u16.to_le_bytes());
    assert!(back.restore_device(&bad_head).is_err());
    let mut too_big = saved;
    too_big[0..4].copy_from_slice(&1000u32.to_le_bytes());
    assert!(Balloon::new(BalloonConfig::default(), 64)
        .unwrap()
        .restore_device(&too_big)
        .is_err());
}

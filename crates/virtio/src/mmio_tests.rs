//! MmioTransport against a test device and mock guest memory: the driver's init sequence
//! (virtio 1.2 §3.1.1), and a driver that gets it wrong on purpose.

#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::QueueT;
use vm_memory::GuestAddress;

use super::*;
use crate::device::DeviceCommon;
use crate::interrupt::CountingTrigger;
use crate::queue::pop_chain;

const QUEUE_BASE: u64 = 0x1000;

struct TestDevice {
    common: DeviceCommon,
    config: Vec<u8>,
    used: usize,
}

impl VirtioDevice for TestDevice {
    fn common(&self) -> &DeviceCommon {
        &self.common
    }
    fn common_mut(&mut self) -> &mut DeviceCommon {
        &mut self.common
    }
    fn config_space(&self) -> &[u8] {
        &self.config
    }
    fn process_queue(&mut self, index: usize) {
        let mut descs = Vec::new();
        let Some(a) = self.common.active() else { return };
        let q = &mut a.queues[index];
        loop {
            match pop_chain(q, &a.mem, &mut descs) {
                Ok(Some(head)) => {
                    q.add_used(&a.mem, head, 0).unwrap();
                    a.interrupt.signal_used();
                    self.used += 1;
                }
                Ok(None) => return,
                Err(e) => return self.common.fail(format_args!("{e}")),
            }
        }
    }
}

struct Rig {
    mem: Memory,
    dev: Arc<Mutex<TestDevice>>,
    t: MmioTransport,
    irq: Arc<CountingTrigger>,
}

fn rig() -> Rig {
    let mem = Memory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let dev = Arc::new(Mutex::new(TestDevice {
        common: DeviceCommon::new(42, 1 << 3, &[16]).unwrap(),
        config: (1..=8).collect(),
        used: 0,
    }));
    let irq = Arc::new(CountingTrigger::default());
    let t = MmioTransport::new(dev.clone(), mem.clone(), VirtioInterrupt::new(irq.clone()));
    Rig { mem, dev, t, irq }
}

fn r(t: &mut MmioTransport, off: u64) -> u32 {
    let mut d = [0u8; 4];
    t.read(off, &mut d);
    u32::from_le_bytes(d)
}

fn w(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

/// The Linux driver's sequence up to FEATURES_OK.
fn negotiate(t: &mut MmioTransport, features: u64) {
    w(t, 0x70, 0);
    w(t, 0x70, status::ACKNOWLEDGE);
    w(t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
    w(t, 0x24, 0);
    w(t, 0x20, features as u32);
    w(t, 0x24, 1);
    w(t, 0x20, (features >> 32) as u32);
    w(t, 0x70, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
}

fn setup_queue(t: &mut MmioTransport, vq: &MockSplitQueue<'_, Memory>, size: u32) {
    w(t, 0x30, 0);
    assert_eq!(r(t, 0x44), 0);
    assert_eq!(r(t, 0x34), 16);
    w(t, 0x38, size);
    w(t, 0x80, vq.desc_table_addr().0 as u32);
    w(t, 0x84, 0);
    w(t, 0x90, vq.avail_addr().0 as u32);
    w(t, 0x94, 0);
    w(t, 0xa0, vq.used_addr().0 as u32);
    w(t, 0xa4, 0);
    w(t, 0x44, 1);
}

const ALL_OK: u32 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags as u16, next))
}

#[test]
fn identification_registers() {
    let mut g = rig();
    assert_eq!(r(&mut g.t, 0x00), 0x7472_6976);
    assert_eq!(r(&mut g.t, 0x04), 2);
    assert_eq!(r(&mut g.t, 0x08), 42);
    w(&mut g.t, 0x14, 0);
    assert_eq!(r(&mut g.t, 0x10), 1 << 3);
    w(&mut g.t, 0x14, 1);
    assert_eq!(r(&mut g.t, 0x10), 1, "VERSION_1 is offered");
    w(&mut g.t, 0x14, 7);
    assert_eq!(r(&mut g.t, 0x10), 0);
    let mut b = [0u8; 2];
    g.t.read(0x102, &mut b);
    assert_eq!(b, [3, 4]);
}

#[test]
fn init_sequence_activates_and_mmio_notify_kicks_the_eventfd() {
    let mut g = rig();
    let vq = MockSplitQueue::create(&g.mem, GuestAddress(QUEUE_BASE), 16);
    negotiate(&mut g.t, crate::features::VERSION_1 | 1 << 3);
    assert_eq!(r(&mut g.t, 0x70) & status::FEATURES_OK, status::FEATURES_OK);
    setup_queue(&mut g.t, &vq, 16);
    w(&mut g.t, 0x70, ALL_OK);
    assert_eq!(r(&mut g.t, 0x70), ALL_OK);
    assert!(g.dev.lock().unwrap().common().is_active());
    assert_eq!(
        g.dev.lock().unwrap().acked_features(),
        crate::features::VERSION_1 | 1 << 3
    );

    vq.add_desc_chains(
        &[
            desc(0x8000, 16, VRING_DESC_F_NEXT, 1),
            desc(0x9000, 1, VRING_DESC_F_WRITE, 0),
        ],
        0,
    )
    .unwrap();
    w(&mut g.t, NOTIFY_OFFSET, 0);
    // The fallback path wrote the queue's eventfd; the event loop would now run the queue.
    assert_eq!(g.dev.lock().unwrap().queue_evts()[0].read().unwrap(), 1);
    g.dev.lock().unwrap().process_queue(0);
    assert_eq!(g.dev.lock().unwrap().used, 1);
    assert_eq!(vq.used().idx().load(), 1);
    assert_eq!(r(&mut g.t, 0x60), 1, "used-buffer interrupt");
    assert_eq!(g.irq.count(), 1);
    w(&mut g.t, 0x64, 1);
    assert_eq!(r(&mut g.t, 0x60), 0);

    // Reset returns everything to the start.
    w(&mut g.t, 0x70, 0);
    assert_eq!(r(&mut g.t, 0x70), 0);
    assert!(!g.dev.lock().unwrap().common().is_active());
    assert_eq!(r(&mut g.t, 0x44), 0);
}

#[test]
fn notify_before_driver_ok_and_for_missing_queues_is_ignored() {
    let mut g = rig();
    w(&mut g.t, NOTIFY_OFFSET, 0);
    assert!(
        g.dev.lock().unwrap().queue_evts()[0].read().is_err(),
        "no kick before DRIVER_OK"
    );
    let vq = MockSplitQueue::create(&g.mem, GuestAddress(QUEUE_BASE), 16);
    negotiate(&mut g.t, crate::features::VERSION_1);
    setup_queue(&mut g.t, &vq, 16);
    w(&mut g.t, 0x70, ALL_OK);
    w(&mut g.t, NOTIFY_OFFSET, 5);
    w(&mut g.t, NOTIFY_OFFSET, u32::MAX);
    assert!(g.dev.lock().unwrap().queue_evts()[0].read().is_err());
    // A kick the event loop sees before activation does nothing either.
    let mut g = rig();
    g.dev.lock().unwrap().process_queue(0);
    assert_eq!(g.dev.lock().unwrap().used, 0);
    assert_eq!(r(&mut g.t, 0x70), 0);
}

#[test]
fn features_without_version_1_or_unoffered_are_refused() {
    let mut g = rig();
    negotiate(&mut g.t, 1 << 3);
    assert_eq!(r(&mut g.t, 0x70) & status::FEATURES_OK, 0);
    negotiate(&mut g.t, crate::features::VERSION_1 | 1 << 5);
    assert_eq!(r(&mut g.t, 0x70) & status::FEATURES_OK, 0);
    // DRIVER_OK without FEATURES_OK: the device does not start.
    w(&mut g.t, 0x70, status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK);
    assert!(!g.dev.lock().unwrap().common().is_active());
}

#[test]
fn bad_queue_sizes_and_rings_outside_memory_need_reset() {
    for (size, base) in [(0u32, QUEUE_BASE), (12, QUEUE_BASE), (32, QUEUE_BASE), (16, 0xf_ffc0)] {
        let mut g = rig();
        let vq = MockSplitQueue::create(&g.mem, GuestAddress(QUEUE_BASE), 16);
        negotiate(&mut g.t, crate::features::VERSION_1);
        setup_queue(&mut g.t, &vq, size);
        if base != QUEUE_BASE {
            w(&mut g.t, 0x44, 0);
            w(&mut g.t, 0xa0, base as u32);
            w(&mut g.t, 0x44, 1);
        }
        w(&mut g.t, 0x70, ALL_OK);
        assert_eq!(
            r(&mut g.t, 0x70) & status::DEVICE_NEEDS_RESET,
            status::DEVICE_NEEDS_RESET,
            "size {size} base {base:#x}"
        );
        assert_eq!(r(&mut g.t, 0x60), 2, "config interrupt");
        assert_eq!(g.irq.count(), 1);
        // A reset makes the device usable again.
        w(&mut g.t, 0x70, 0);
        assert_eq!(r(&mut g.t, 0x70), 0);
    }
}

#[test]
fn a_malicious_chain_sets_needs_reset_and_later_kicks_are_ignored() {
    let mut g = rig();
    let vq = MockSplitQueue::create(&g.mem, GuestAddress(QUEUE_BASE), 16);
    negotiate(&mut g.t, crate::features::VERSION_1);
    setup_queue(&mut g.t, &vq, 16);
    w(&mut g.t, 0x70, ALL_OK);
    vq.add_desc_chains(
        &[
            desc(0x8000, 16, VRING_DESC_F_NEXT, 1),
            desc(0x9000, 16, VRING_DESC_F_NEXT, 0),
        ],
        0,
    )
    .unwrap();
    g.dev.lock().unwrap().process_queue(0);
    assert_eq!(r(&mut g.t, 0x70), ALL_OK | status::DEVICE_NEEDS_RESET);
    assert_eq!(r(&mut g.t, 0x60), 2);
    vq.add_desc_chains(&[desc(0x8000, 16, 0, 0)], 2).unwrap();
    g.dev.lock().unwrap().process_queue(0);
    assert_eq!(g.dev.lock().unwrap().used, 0);
}

#[test]
fn odd_accesses_never_panic() {
    let mut g = rig();
    for off in [
        0x01u64, 0x03, 0x0e, 0x18, 0x28, 0x3c, 0x48, 0x58, 0x68, 0xc0, 0xf8, 0xfff, 0x107, 0x108, 0x800,
    ] {
        for len in [1usize, 2, 4, 8] {
            let mut d = vec![0xaau8; len];
            g.t.read(off, &mut d);
            g.t.write(off, &d);
        }
    }
    // Config reads past the end read as zero; writes there are dropped.
    let mut d = [0xffu8; 4];
    g.t.read(0x106, &mut d);
    assert_eq!(d, [0; 4]);
    // Status writes that clear bits are ignored.
    w(&mut g.t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
    w(&mut g.t, 0x70, status::ACKNOWLEDGE);
    assert_eq!(r(&mut g.t, 0x70), status::ACKNOWLEDGE | status::DRIVER);
    // Queue registers for a queue that does not exist.
    w(&mut g.t, 0x30, 9);
    assert_eq!(r(&mut g.t, 0x34), 0);
    w(&mut g.t, 0x38, 16);
    w(&mut g.t, 0x44, 1);
    assert_eq!(r(&mut g.t, 0x44), 0);
}

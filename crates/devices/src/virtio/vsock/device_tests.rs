//! The vsock device against mock guest memory and queues, with real host sockets.

#![allow(clippy::cast_possible_truncation)]

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use ::virtio::interrupt::CountingTrigger;
use ::virtio::{Activated, VirtioDevice, VirtioInterrupt};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::GuestAddress;

use super::super::packet::{op, Header, HDR_LEN, HOST_CID, TYPE_STREAM};
use super::*;
use crate::virtio::Memory;

const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
const CID: u64 = 3;

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, next))
}

fn mem() -> Memory {
    Memory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

struct Setup<'a> {
    dev: Vsock,
    rxq: MockSplitQueue<'a, Memory>,
    txq: MockSplitQueue<'a, Memory>,
    evq: MockSplitQueue<'a, Memory>,
    irq: Arc<CountingTrigger>,
    dir: PathBuf,
}

impl Drop for Setup<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn setup<'a>(mem: &'a Memory, name: &str) -> Setup<'a> {
    let dir = std::env::temp_dir().join(format!("hearth-vsock-dev-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut dev = Vsock::new(CID, &dir.join("v.sock")).unwrap();
    assert_eq!(dev.device_type(), 19);
    assert_eq!(dev.config_space(), &CID.to_le_bytes());
    dev.set_acked_features(dev.avail_features());
    // The mock does not wrap its available ring: big enough for every test.
    let rxq = MockSplitQueue::create(mem, GuestAddress(0), 512);
    let txq = MockSplitQueue::create(mem, GuestAddress(0x4_0000), 512);
    let evq = MockSplitQueue::create(mem, GuestAddress(0x8_0000), 16);
    let irq = Arc::new(CountingTrigger::default());
    dev.activate(Activated {
        mem: mem.clone(),
        interrupt: VirtioInterrupt::new(irq.clone()),
        queues: vec![
            rxq.create_queue::<Queue>().unwrap(),
            txq.create_queue::<Queue>().unwrap(),
            evq.create_queue::<Queue>().unwrap(),
        ],
    })
    .unwrap();
    Setup {
        dev,
        rxq,
        txq,
        evq,
        irq,
        dir,
    }
}

fn guest_hdr(op: u16, dst_port: u32, len: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: 1024,
        dst_port,
        len,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 65536,
        fwd_cnt: 0,
    }
}

/// Puts a packet on the transmit queue at `addr` (header and payload in two buffers,
/// descriptors `at` and `at + 1`).
fn send(s: &Setup, m: &Memory, h: &Header, payload: &[u8], addr: u64, at: u16) {
    m.write_slice(&h.to_bytes(), GuestAddress(addr)).unwrap();
    m.write_slice(payload, GuestAddress(addr + 0x100)).unwrap();
    s.txq
        .add_desc_chains(
            &[
                desc(addr, HDR_LEN as u32, F_NEXT, at + 1),
                desc(addr + 0x100, payload.len() as u32, 0, 0),
            ],
            at,
        )
        .unwrap();
}

fn rx_header(m: &Memory, addr: u64) -> Header {
    let mut b = [0u8; HDR_LEN];
    m.read_slice(&mut b, GuestAddress(addr)).unwrap();
    Header::from_bytes(&b)
}

#[test]
fn guest_connects_sends_and_receives() {
    let m = mem();
    let mut s = setup(&m, "flow");
    let l = UnixListener::bind(s.dir.join("v.sock_6000")).unwrap();
    // No receive buffers yet: the RESPONSE waits.
    send(&s, &m, &guest_hdr(op::REQUEST, 6000, 0), &[], 0x1_0000, 0);
    s.dev.process_queue(TX);
    assert_eq!(s.txq.used().idx().load(), 1);
    assert_eq!(s.dev.connection_count(), 1);
    s.rxq
        .add_desc_chains(&[desc(0x2_0000, 0x1000 + HDR_LEN as u32, F_WRITE, 0)], 0)
        .unwrap();
    s.dev.process_queue(RX);
    assert_eq!(s.rxq.used().idx().load(), 1);
    let h = rx_header(&m, 0x2_0000);
    assert_eq!(
        (h.op, h.src_cid, h.dst_cid, h.src_port, h.dst_port),
        (op::RESPONSE, HOST_CID, CID, 6000, 1024)
    );
    let (mut host, _) = l.accept().unwrap();
    host.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    send(&s, &m, &guest_hdr(op::RW, 6000, 5), b"hello", 0x1_1000, 2);
    s.dev.process_queue(TX);
    let mut got = [0u8; 5];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    // A receive buffer with nothing to fill stays the driver's...
    s.rxq
        .add_desc_chains(&[desc(0x3_0000, 0x1000 + HDR_LEN as u32, F_WRITE, 0)], 1)
        .unwrap();
    s.dev.process_queue(RX);
    assert_eq!(s.rxq.used().idx().load(), 1);
    // ...until the host writes.
    host.write_all(b"world").unwrap();
    s.dev.backend_event();
    assert_eq!(s.rxq.used().idx().load(), 2);
    let h = rx_header(&m, 0x3_0000);
    assert_eq!((h.op, h.len, h.fwd_cnt), (op::RW, 5, 5));
    let mut p = [0u8; 5];
    m.read_slice(&mut p, GuestAddress(0x3_0000 + HDR_LEN as u64)).unwrap();
    assert_eq!(&p, b"world");
    assert!(s.irq.count() >= 3);
    // Device reset drops the connection: the host sees end of file.
    s.dev.reset();
    assert_eq!(s.dev.connection_count(), 0);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
}

#[test]
fn malformed_packets_are_dropped_and_bad_rings_need_reset() {
    let m = mem();
    let mut s = setup(&m, "bad");
    // len near u32::MAX with a 5-byte payload buffer: dropped, the device goes on.
    send(&s, &m, &guest_hdr(op::RW, 6000, u32::MAX - 3), b"hello", 0x1_0000, 0);
    // A header cut short.
    s.txq.add_desc_chains(&[desc(0x1_2000, 20, 0, 0)], 2).unwrap();
    s.dev.process_queue(TX);
    assert_eq!(s.txq.used().idx().load(), 2);
    assert!(!s.dev.common().is_broken());
    // A transmit buffer outside guest memory breaks the ring: DEVICE_NEEDS_RESET.
    s.txq.add_desc_chains(&[desc(0x20_0000, 64, 0, 0)], 3).unwrap();
    s.dev.process_queue(TX);
    assert!(s.dev.common().is_broken());
}

#[test]
fn a_full_control_queue_stops_the_transmit_queue_until_receive_buffers_come() {
    let m = mem();
    let mut s = setup(&m, "stall");
    // 300 refused REQUESTs (nobody listens), header-only chains: more RSTs than may wait.
    let mut chains = Vec::new();
    for i in 0..300u16 {
        let mut h = guest_hdr(op::REQUEST, 7, 0);
        h.src_port = u32::from(i);
        let addr = 0x1_0000 + u64::from(i) * 0x40;
        m.write_slice(&h.to_bytes(), GuestAddress(addr)).unwrap();
        chains.push(desc(addr, HDR_LEN as u32, 0, 0));
    }
    s.txq.add_desc_chains(&chains, 0).unwrap();
    s.dev.process_queue(TX);
    let max = super::super::muxer::MAX_CTRL as u16;
    assert_eq!(s.txq.used().idx().load(), max, "transmit stops at a full control queue");
    // 100 receive buffers: 100 RSTs go out and as many more requests are taken.
    let rx: Vec<_> = (0..100u64)
        .map(|i| desc(0x2_0000 + i * 0x40, HDR_LEN as u32, F_WRITE, 0))
        .collect();
    s.rxq.add_desc_chains(&rx, 0).unwrap();
    s.dev.process_queue(RX);
    assert_eq!(s.rxq.used().idx().load(), 100);
    assert_eq!(rx_header(&m, 0x2_0000).op, op::RST);
    assert_eq!(s.txq.used().idx().load(), 300.min(max + 100));
    assert!(!s.dev.common().is_broken());
}

#[test]
fn transport_reset_posts_an_event() {
    let m = mem();
    let mut s = setup(&m, "event");
    assert!(!s.dev.transport_reset(), "no event buffer yet");
    m.write_slice(&[0xff; 4], GuestAddress(0x5_0000)).unwrap();
    s.evq.add_desc_chains(&[desc(0x5_0000, 4, F_WRITE, 0)], 0).unwrap();
    s.dev.process_queue(EVENT);
    assert_eq!(s.evq.used().idx().load(), 0, "event buffers wait for an event");
    assert!(s.dev.transport_reset());
    assert_eq!(s.evq.used().idx().load(), 1);
    let mut id = [0u8; 4];
    m.read_slice(&mut id, GuestAddress(0x5_0000)).unwrap();
    assert_eq!(u32::from_le_bytes(id), 0);
}

#[test]
fn reserved_cids_are_refused() {
    let dir = std::env::temp_dir().join(format!("hearth-vsock-dev-{}-cid", std::process::id()));
    for cid in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
        assert!(matches!(Vsock::new(cid, &dir.join("x")), Err(VsockError::BadCid(_))));
    }
}

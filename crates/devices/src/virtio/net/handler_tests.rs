//! virtio-net frames against mock guest memory and queues and a mock backend.

#![allow(clippy::cast_possible_truncation)]

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ::virtio::interrupt::CountingTrigger;
use ::virtio::{Activated, VirtioDevice, VirtioInterrupt};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::GuestAddress;

use super::super::device::{Backend, Net, RX, TX};
use super::*;

const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;

#[derive(Clone, Default)]
struct Mock {
    incoming: Arc<Mutex<VecDeque<Vec<u8>>>>,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Makes `tx_ready` false, as a full passt stream does.
    stalled: Arc<AtomicBool>,
    /// Acts as a tap with vnet headers offering every offload.
    vnet: bool,
    /// What `set_offloads` was last called with.
    offloads_set: Arc<Mutex<Option<u64>>>,
    /// The fd `event_fd` reports (a real eventfd in the rate-limit test).
    event: Option<std::os::fd::RawFd>,
}

impl Backend for Mock {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(self.incoming.lock().unwrap().pop_front().map(|f| {
            buf[..f.len()].copy_from_slice(&f);
            f.len()
        }))
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        assert!(!self.stalled.load(Ordering::SeqCst), "send while not ready");
        self.sent.lock().unwrap().push(frame.to_vec());
        Ok(())
    }
    fn tx_ready(&self) -> bool {
        !self.stalled.load(Ordering::SeqCst)
    }
    fn vnet_hdr(&self) -> bool {
        self.vnet
    }
    fn offload_features(&self) -> u64 {
        u64::MAX
    }
    fn set_offloads(&mut self, acked: u64) -> io::Result<()> {
        *self.offloads_set.lock().unwrap() = Some(acked);
        Ok(())
    }
    fn event_fd(&self) -> Option<std::os::fd::RawFd> {
        self.event
    }
}

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, next))
}

struct Setup<'a> {
    net: Net,
    mock: Mock,
    rxq: MockSplitQueue<'a, Memory>,
    txq: MockSplitQueue<'a, Memory>,
    irq: Arc<CountingTrigger>,
}

fn setup(mem: &Memory) -> Setup<'_> {
    setup_with(mem, Mock::default())
}

fn setup_with(mem: &Memory, mock: Mock) -> Setup<'_> {
    let mut net = Net::new(Box::new(mock.clone()), [2, 1, 2, 3, 4, 5]).unwrap();
    assert_eq!(net.device_type(), 1);
    assert_eq!(&net.config_space()[..6], &[2, 1, 2, 3, 4, 5]);
    net.set_acked_features(net.avail_features());
    // Two rings apart in memory (MockSplitQueue::create puts its rings at `start`).
    let rxq = MockSplitQueue::create(mem, GuestAddress(0), 16);
    let txq = MockSplitQueue::create(mem, GuestAddress(0x4_0000), 16);
    let irq = Arc::new(CountingTrigger::default());
    net.activate(Activated {
        mem: mem.clone(),
        interrupt: VirtioInterrupt::new(irq.clone()),
        queues: vec![
            rxq.create_queue::<Queue>().unwrap(),
            txq.create_queue::<Queue>().unwrap(),
        ],
    })
    .unwrap();
    Setup {
        net,
        mock,
        rxq,
        txq,
        irq,
    }
}

fn mem() -> Memory {
    Memory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

#[test]
fn transmit_strips_the_header_across_buffers() {
    let m = mem();
    let mut s = setup(&m);
    // Header with garbage in it (ignored), the frame split over two buffers.
    m.write_slice(&[0xee; HDR_LEN], GuestAddress(0x8000)).unwrap();
    m.write_slice(b"hello ", GuestAddress(0x8000 + HDR_LEN as u64)).unwrap();
    m.write_slice(b"world", GuestAddress(0x9000)).unwrap();
    s.txq
        .add_desc_chains(&[desc(0x8000, HDR_LEN as u32 + 6, F_NEXT, 1), desc(0x9000, 5, 0, 0)], 0)
        .unwrap();
    s.net.process_queue(TX);
    assert_eq!(*s.mock.sent.lock().unwrap(), vec![b"hello world".to_vec()]);
    assert_eq!(s.txq.used().idx().load(), 1);
    assert_eq!(s.irq.count(), 1);
    let m = s.net.metrics();
    assert_eq!((m.tx_packets_count.get(), m.tx_bytes_count.get()), (1, 11));
}

#[test]
fn receive_prepends_a_zeroed_header_and_waits_for_buffers() {
    let m = mem();
    let mut s = setup(&m);
    s.mock.incoming.lock().unwrap().push_back(b"frame-one".to_vec());
    s.mock.incoming.lock().unwrap().push_back(b"frame-two".to_vec());
    // No buffers yet: the frame is kept, nothing used.
    s.net.backend_event();
    assert_eq!(s.rxq.used().idx().load(), 0);
    // One buffer split in two: the header straddles them.
    m.write_slice(&[0xff; 64], GuestAddress(0x8000)).unwrap();
    s.rxq
        .add_desc_chains(
            &[desc(0x8000, 8, F_NEXT | F_WRITE, 1), desc(0x9000, 100, F_WRITE, 0)],
            0,
        )
        .unwrap();
    s.net.process_queue(RX);
    assert_eq!(s.rxq.used().idx().load(), 1);
    let used = s.rxq.used().ring().ref_at(0).unwrap().load();
    assert_eq!(used.len() as usize, HDR_LEN + 9);
    let mut hdr = [0u8; HDR_LEN];
    m.read_slice(&mut hdr[..8], GuestAddress(0x8000)).unwrap();
    m.read_slice(&mut hdr[8..], GuestAddress(0x9000)).unwrap();
    assert_eq!(hdr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    let mut f = [0u8; 9];
    m.read_slice(&mut f, GuestAddress(0x9000 + 4)).unwrap();
    assert_eq!(&f, b"frame-one");
    // The second frame waits too, and goes when the next buffer comes.
    assert_eq!(s.mock.incoming.lock().unwrap().len(), 0);
    s.rxq.add_desc_chains(&[desc(0xa000, 1526, F_WRITE, 0)], 2).unwrap();
    s.net.process_queue(RX);
    assert_eq!(s.rxq.used().idx().load(), 2);
    let mut f = [0u8; 9];
    m.read_slice(&mut f, GuestAddress(0xa000 + HDR_LEN as u64)).unwrap();
    assert_eq!(&f, b"frame-two");
    assert_eq!(s.irq.count(), 2);
    let m = s.net.metrics();
    assert_eq!((m.rx_packets_count.get(), m.rx_bytes_count.get()), (2, 18));
    assert!(m.no_rx_avail_buffer.get() >= 1, "the first frame waited for buffers");
}

#[test]
fn short_transmit_chain_is_dropped_and_receive_too_small_gets_nothing() {
    let m = mem();
    let mut s = setup(&m);
    s.txq.add_desc_chains(&[desc(0x8000, 4, 0, 0)], 0).unwrap();
    s.net.process_queue(TX);
    assert!(s.mock.sent.lock().unwrap().is_empty());
    assert_eq!(s.txq.used().idx().load(), 1);
    s.mock.incoming.lock().unwrap().push_back(vec![7; 100]);
    s.rxq.add_desc_chains(&[desc(0x8000, 50, F_WRITE, 0)], 0).unwrap();
    s.net.backend_event();
    assert_eq!(s.rxq.used().idx().load(), 1);
    assert_eq!(s.rxq.used().ring().ref_at(0).unwrap().load().len(), 0);
    assert!(!s.net.common().is_broken());
    let m = s.net.metrics();
    assert_eq!(
        (m.tx_malformed_frames.get(), m.rx_fails.get(), m.tx_packets_count.get()),
        (1, 1, 0)
    );
}

#[test]
fn a_bad_chain_needs_reset_not_a_panic() {
    let m = mem();
    let mut s = setup(&m);
    // A looping transmit chain.
    s.txq
        .add_desc_chains(&[desc(0x8000, 16, F_NEXT, 1), desc(0x9000, 16, F_NEXT, 0)], 0)
        .unwrap();
    s.net.process_queue(TX);
    assert!(s.net.common().is_broken());
    assert!(s.mock.sent.lock().unwrap().is_empty());
    assert_eq!(s.irq.count(), 1, "config interrupt");

    // A receive buffer outside guest memory.
    let mut s = setup(&m);
    s.mock.incoming.lock().unwrap().push_back(vec![1; 60]);
    s.rxq.add_desc_chains(&[desc(0x20_0000, 1526, F_WRITE, 0)], 0).unwrap();
    s.net.backend_event();
    assert!(s.net.common().is_broken());
    assert_eq!(s.rxq.used().idx().load(), 0);
}

#[test]
fn transmit_waits_while_the_backend_is_full_and_resumes_on_its_event() {
    let m = mem();
    let mut s = setup(&m);
    m.write_slice(b"first", GuestAddress(0x8000 + HDR_LEN as u64)).unwrap();
    m.write_slice(b"second", GuestAddress(0x9000 + HDR_LEN as u64)).unwrap();
    s.txq
        .add_desc_chains(
            &[
                desc(0x8000, HDR_LEN as u32 + 5, 0, 0),
                desc(0x9000, HDR_LEN as u32 + 6, 0, 0),
            ],
            0,
        )
        .unwrap();
    s.mock.stalled.store(true, Ordering::SeqCst);
    s.net.process_queue(TX);
    // Nothing taken off the ring: the chains wait for the backend.
    assert_eq!(s.txq.used().idx().load(), 0);
    assert!(s.mock.sent.lock().unwrap().is_empty());
    // Another kick while still full changes nothing.
    s.net.process_queue(TX);
    assert_eq!(s.txq.used().idx().load(), 0);
    // The backend drained: its event resumes transmit without a new kick.
    s.mock.stalled.store(false, Ordering::SeqCst);
    s.net.backend_event();
    assert_eq!(s.txq.used().idx().load(), 2);
    assert_eq!(
        *s.mock.sent.lock().unwrap(),
        vec![b"first".to_vec(), b"second".to_vec()]
    );
    assert_eq!(s.irq.count(), 1);
    assert!(!s.net.common().is_broken());
}

#[test]
fn with_vnet_headers_offloads_are_offered_applied_and_headers_cross_checked() {
    use virtio_bindings::virtio_net::{VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_MRG_RXBUF};
    let m = mem();
    // Without vnet headers (passt) nothing is offered, whatever the backend claims.
    let plain = setup(&m);
    assert_eq!(plain.net.avail_features() & (1 << VIRTIO_NET_F_CSUM), 0);
    let mut s = setup_with(
        &m,
        Mock {
            vnet: true,
            ..Mock::default()
        },
    );
    let avail = s.net.avail_features();
    assert_ne!(avail & (1 << VIRTIO_NET_F_GUEST_TSO4), 0);
    assert_eq!(avail & (1 << VIRTIO_NET_F_MRG_RXBUF), 0, "big-packets mode only");
    assert_eq!(
        *s.mock.offloads_set.lock().unwrap(),
        Some(avail),
        "applied at activation"
    );

    // A TSO segment goes to the backend header and all; one with a bad header does not.
    let mut good = [0u8; HDR_LEN];
    good[0] = 1; // NEEDS_CSUM
    good[1] = 1; // TCPV4
    good[2..4].copy_from_slice(&54u16.to_le_bytes()); // hdr_len
    good[4..6].copy_from_slice(&1448u16.to_le_bytes()); // gso_size
    good[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start
    good[8..10].copy_from_slice(&16u16.to_le_bytes()); // csum_offset
    let frame = vec![0x5a; 3000];
    m.write_slice(&good, GuestAddress(0x8000)).unwrap();
    m.write_slice(&frame, GuestAddress(0x8000 + HDR_LEN as u64)).unwrap();
    let mut bad = good;
    bad[8..10].copy_from_slice(&4000u16.to_le_bytes()); // checksum beyond the frame
    m.write_slice(&bad, GuestAddress(0xa000)).unwrap();
    let len = (HDR_LEN + frame.len()) as u32;
    s.txq
        .add_desc_chains(&[desc(0x8000, len, 0, 0), desc(0xa000, len, 0, 0)], 0)
        .unwrap();
    s.net.process_queue(TX);
    let sent = s.mock.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!((&sent[0][..HDR_LEN], &sent[0][HDR_LEN..]), (&good[..], &frame[..]));
    assert_eq!(
        s.txq.used().idx().load(),
        2,
        "the bad one is used, not left in the ring"
    );
    assert_eq!(s.net.metrics().tx_malformed_frames.get(), 1);
    assert!(!s.net.common().is_broken());

    // Received: the backend's header reaches the driver with num_buffers = 1.
    let mut pkt = good.to_vec();
    pkt[10] = 0x77; // whatever the tap left there
    pkt.extend_from_slice(&frame);
    s.mock.incoming.lock().unwrap().push_back(pkt);
    s.rxq.add_desc_chains(&[desc(0xc000, 0x4000, F_WRITE, 0)], 0).unwrap();
    s.net.backend_event();
    assert_eq!(s.rxq.used().ring().ref_at(0).unwrap().load().len(), len);
    let mut got = [0u8; HDR_LEN];
    m.read_slice(&mut got, GuestAddress(0xc000)).unwrap();
    assert_eq!((&got[..10], &got[10..]), (&good[..10], &[1u8, 0][..]));

    // Reset clears the tap's offloads.
    s.net.reset();
    assert_eq!(*s.mock.offloads_set.lock().unwrap(), Some(0));
}

/// Whether `fd` is readable right now.
fn readable(fd: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

#[test]
fn rate_limits_hold_frames_back_both_ways_until_the_timer() {
    use crate::rate_limiter::{Clock, Limits, ManualClock};
    use std::time::Duration;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    let m = mem();
    // The backend's fd is readable the whole time, as a tap with frames waiting is.
    let event = EventFd::new(EFD_NONBLOCK).unwrap();
    event.write(1).unwrap();
    let mock = Mock {
        event: Some(std::os::fd::AsRawFd::as_raw_fd(&event)),
        ..Mock::default()
    };
    let mut s = setup_with(&m, mock);
    let clock = ManualClock::default();
    let two_a_second = Limits {
        iops: 2,
        ..Limits::default()
    };
    s.net
        .set_rate_limits(two_a_second, two_a_second, &|| {
            Box::new(clock.clone()) as Box<dyn Clock>
        })
        .unwrap();
    let gate = s.net.backend_fd().unwrap();
    assert_ne!(gate, event_fd(&s), "receive is watched through the gate");
    assert!(readable(gate), "open gate: the backend's readiness shows through");

    // Transmit: five frames queued, two go (the burst), the rest wait for the timer.
    for i in 0..5u16 {
        let a = 0x8000 + u64::from(i) * 0x100;
        m.write_slice(&[0; HDR_LEN], GuestAddress(a)).unwrap();
        s.txq.add_desc_chains(&[desc(a, HDR_LEN as u32 + 4, 0, 0)], i).unwrap();
    }
    s.net.process_queue(TX);
    assert_eq!(s.mock.sent.lock().unwrap().len(), 2);
    assert_eq!(s.net.metrics().tx_rate_limiter_throttled.get(), 1);
    s.net.process_queue(TX); // a guest kick while throttled changes nothing
    assert_eq!(s.mock.sent.lock().unwrap().len(), 2);
    let (rx_timer, tx_timer) = s.net.rate_limit_fds();
    assert!(rx_timer.is_some() && tx_timer.is_some());
    clock.advance(Duration::from_secs(1));
    s.net.tx_rate_limit_fired();
    assert_eq!(s.mock.sent.lock().unwrap().len(), 4, "two more a second later");

    // Receive: five frames waiting, five buffers posted; two are delivered, then the gate
    // closes so the level-triggered event loop is not woken for the frames left in the tap.
    for i in 0..5u16 {
        s.mock.incoming.lock().unwrap().push_back(vec![i as u8; 60]);
        s.rxq
            .add_desc_chains(&[desc(0x2_0000 + u64::from(i) * 0x1000, 2048, F_WRITE, 0)], i)
            .unwrap();
    }
    s.net.backend_event();
    assert_eq!(s.rxq.used().idx().load(), 2);
    assert_eq!(s.net.metrics().rx_rate_limiter_throttled.get(), 1);
    assert!(readable(event_fd(&s)), "frames still wait in the backend");
    assert!(!readable(gate), "closed gate: the event loop is not woken");
    clock.advance(Duration::from_secs(1));
    s.net.rx_rate_limit_fired();
    assert_eq!(s.rxq.used().idx().load(), 4);
    assert!(!readable(gate), "throttled again after the next two");
    clock.advance(Duration::from_secs(1));
    s.net.rx_rate_limit_fired();
    assert_eq!(s.rxq.used().idx().load(), 5);
    assert!(readable(gate), "nothing throttled: the gate is open again");
}

fn event_fd(s: &Setup<'_>) -> std::os::fd::RawFd {
    s.mock.event.unwrap()
}

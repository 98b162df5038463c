//! The virtio-vsock device: config space (the guest's CID), its three queues, and moving
//! packets between them and the [`Muxer`].
//!
//! Every event (a kick of either data queue, host socket news) runs the same pass: take the
//! guest's packets off the transmit queue until the muxer's control queue is full, then fill
//! receive buffers with what the muxer has for the guest. A receive buffer popped when the
//! muxer turns out to have nothing is put back (the ring position is rewound), so no buffer
//! is held across events.

use std::io;
use std::os::fd::RawFd;
use std::path::Path;

use ::virtio::queue::pop_chain;
use ::virtio::{features, DeviceCommon, VirtioDevice};
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::QueueT;
use vm_memory::Bytes;

use super::muxer::Muxer;
use super::packet::{read_packet, rx_capacity, write_packet, MAX_PAYLOAD};

pub(crate) const QUEUE_SIZE: u16 = 256;
pub(crate) const RX: usize = 0;
pub(crate) const TX: usize = 1;
pub(crate) const EVENT: usize = 2;
/// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (§5.10.6.7).
const EVENT_TRANSPORT_RESET: u32 = 0;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("vsock guest CID {0} is reserved (use 3 or more, below 2^32 - 1)")]
    BadCid(u64),
    #[error("cannot listen on the vsock socket {path}")]
    Listen {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the queue eventfds of the vsock device")]
    EventFd(#[source] io::Error),
}

pub struct Vsock {
    common: DeviceCommon,
    config: [u8; 8],
    muxer: Muxer,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    descs: Vec<Descriptor>,
}

impl Vsock {
    /// A device for a guest with CID `cid`, whose host side listens on `uds`.
    pub fn new(cid: u64, uds: &Path) -> Result<Self, VsockError> {
        if cid < 3 || cid >= u64::from(u32::MAX) {
            return Err(VsockError::BadCid(cid));
        }
        let muxer = Muxer::new(uds, cid).map_err(|source| VsockError::Listen {
            path: uds.display().to_string(),
            source,
        })?;
        let common = DeviceCommon::new(
            VIRTIO_ID_VSOCK,
            features::RING_INDIRECT_DESC,
            &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE],
        )
        .map_err(VsockError::EventFd)?;
        Ok(Self {
            common,
            config: cid.to_le_bytes(),
            muxer,
            rx_buf: vec![0; MAX_PAYLOAD],
            tx_buf: Vec::with_capacity(MAX_PAYLOAD),
            descs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
        })
    }

    /// The fd the event loop watches for host socket news (see [`Vsock::backend_event`]).
    pub fn backend_fd(&self) -> RawFd {
        self.muxer.epoll_fd()
    }

    /// Host sockets had news: accept, read, write, then move packets.
    pub fn backend_event(&mut self) {
        let active = self.common.is_active() && !self.common.is_broken();
        self.muxer.host_event(active);
        self.run();
    }

    /// Tells the driver its connections are gone (after the host side lost them, e.g. on
    /// snapshot restore): all connections are dropped and a TRANSPORT_RESET event is posted.
    /// Returns whether the driver had an event buffer for it.
    pub fn transport_reset(&mut self) -> bool {
        self.muxer.reset();
        let Some(active) = self.common.active() else {
            return false;
        };
        let Some(q) = active.queues.get_mut(EVENT) else {
            return false;
        };
        let head = match pop_chain(q, &active.mem, &mut self.descs) {
            Ok(Some(head)) => head,
            Ok(None) => return false,
            Err(e) => {
                self.common.fail(format_args!("event queue: {e}"));
                return false;
            }
        };
        let written = match self.descs.first() {
            Some(d) if d.is_write_only() && d.len() >= 4 => active
                .mem
                .write_slice(&EVENT_TRANSPORT_RESET.to_le_bytes(), d.addr())
                .map_or(0, |()| 4),
            _ => 0,
        };
        if let Err(e) = q.add_used(&active.mem, head, written) {
            self.common.fail(format_args!("cannot add to the used ring: {e}"));
            return false;
        }
        active.interrupt.signal_used();
        written == 4
    }

    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// Transmit, then receive; again while the transmit side had stopped for a full control
    /// queue that the receive side has since drained.
    fn run(&mut self) {
        let mut used = false;
        loop {
            let (tx_used, stalled) = self.process_tx();
            used |= tx_used;
            used |= self.process_rx();
            if !stalled || self.muxer.ctrl_full() {
                break;
            }
        }
        if used {
            if let Some(active) = self.common.active() {
                active.interrupt.signal_used();
            }
        }
    }

    /// Takes guest packets to the muxer. Returns (used any, stopped for a full control queue).
    fn process_tx(&mut self) -> (bool, bool) {
        let mut used = false;
        loop {
            if self.muxer.ctrl_full() {
                return (used, true);
            }
            let Some(active) = self.common.active() else {
                return (used, false);
            };
            let Some(q) = active.queues.get_mut(TX) else {
                return (used, false);
            };
            let head = match pop_chain(q, &active.mem, &mut self.descs) {
                Ok(Some(head)) => head,
                Ok(None) => return (used, false),
                Err(e) => {
                    self.common.fail(format_args!("transmit queue: {e}"));
                    return (used, false);
                }
            };
            let packet = read_packet(&active.mem, &self.descs, &mut self.tx_buf);
            if let Err(e) = q.add_used(&active.mem, head, 0) {
                self.common.fail(format_args!("cannot add to the used ring: {e}"));
                return (used, false);
            }
            used = true;
            match packet {
                Ok(h) => self.muxer.handle_guest(&h, &self.tx_buf),
                Err(e) => ::virtio::guest_warn(format_args!("vsock: malformed packet dropped: {e:?}")),
            }
        }
    }

    /// Fills the guest's receive buffers with what the muxer has. Returns whether it used any.
    fn process_rx(&mut self) -> bool {
        let mut used = false;
        loop {
            let Some(active) = self.common.active() else {
                return used;
            };
            let Some(q) = active.queues.get_mut(RX) else {
                return used;
            };
            let head = match pop_chain(q, &active.mem, &mut self.descs) {
                Ok(Some(head)) => head,
                Ok(None) => return used,
                Err(e) => {
                    self.common.fail(format_args!("receive queue: {e}"));
                    return used;
                }
            };
            let written = match rx_capacity(&self.descs) {
                Some(cap) => match self.muxer.next_rx(cap, &mut self.rx_buf) {
                    Some((h, n)) => write_packet(&active.mem, &self.descs, &h, &self.rx_buf[..n]).unwrap_or(0),
                    None => {
                        // Nothing to send: the buffer goes back for next time.
                        q.set_next_avail(q.next_avail().wrapping_sub(1));
                        return used;
                    }
                },
                None => {
                    ::virtio::guest_warn(format_args!("vsock: receive buffer too small or read-only"));
                    0
                }
            };
            if let Err(e) = q.add_used(&active.mem, head, written) {
                self.common.fail(format_args!("cannot add to the used ring: {e}"));
                return used;
            }
            used = true;
        }
    }
}

impl VirtioDevice for Vsock {
    fn common(&self) -> &DeviceCommon {
        &self.common
    }

    /// The host-side connections did not survive the snapshot: tell the guest to drop its own.
    fn on_restored(&mut self) {
        if self.common.is_active() && !self.transport_reset() {
            ::virtio::guest_warn(format_args!(
                "vsock: no event buffer for TRANSPORT_RESET after restore; guest connections may hang"
            ));
        }
    }
    fn common_mut(&mut self) -> &mut DeviceCommon {
        &mut self.common
    }
    fn config_space(&self) -> &[u8] {
        &self.config
    }
    fn process_queue(&mut self, index: usize) {
        match index {
            RX | TX => self.run(),
            // Event buffers wait for an event (see `transport_reset`).
            _ => {}
        }
    }
    fn reset(&mut self) {
        self.muxer.reset();
        self.common.reset();
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;

//! The virtio-net device: features, config space (MAC, link status), and its two queues.
//! Offload features are offered only when the backend passes vnet headers through and can
//! honour them (`offload`); they reach the backend at activation, also after a restore.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use ::virtio::queue::pop_chain;
use ::virtio::{features, ActivateError, Activated, DeviceCommon, VirtioDevice};
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::QueueT;

use super::handler::{read_tx_packet, write_rx_packet, HDR_LEN, MAX_FRAME};
use super::limits::NetLimits;
use super::metrics::NetMetrics;
use super::offload;
use crate::rate_limiter::{Clock, Limits};

pub(crate) const QUEUE_SIZE: u16 = 256;
pub(crate) const RX: usize = 0;
pub(crate) const TX: usize = 1;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot create the queue eventfds of the network device")]
    EventFd(#[source] io::Error),
    #[error("cannot set up the network device's rate limiter")]
    RateLimiter(#[source] io::Error),
}

/// Where frames go to and come from (a tap device, or a mock in tests).
pub trait Backend: Send {
    /// Reads one frame into `buf`; `None` when none is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// Sends one frame.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Whether `send` can take a frame of any size now. While it cannot, the device leaves
    /// transmit chains in the ring and tries again after the next event on `event_fd`.
    fn tx_ready(&self) -> bool {
        true
    }
    /// Whether frames carry a `virtio_net_hdr_v1` both ways (`recv` and `send` then move the
    /// header and the frame together).
    fn vnet_hdr(&self) -> bool {
        false
    }
    /// The virtio-net offload feature bits this backend can honour (only with `vnet_hdr`).
    fn offload_features(&self) -> u64 {
        0
    }
    /// Tells the backend which features the driver acked (and so which receive offloads the
    /// guest accepts); called at activation and with 0 at reset.
    fn set_offloads(&mut self, acked: u64) -> io::Result<()> {
        let _ = acked;
        Ok(())
    }
    /// An fd the event loop watches: readable when frames may have arrived.
    fn event_fd(&self) -> Option<RawFd> {
        None
    }
    /// Called before draining the backend after `event_fd` was readable.
    fn ack_event(&mut self) {}
}

pub struct Net {
    common: DeviceCommon,
    backend: Box<dyn Backend>,
    config: [u8; 8],
    /// The length of a received packet (header and frame, in `rx_buf`) the driver had no
    /// buffer for yet.
    pending: Option<usize>,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    descs: Vec<Descriptor>,
    metrics: Arc<NetMetrics>,
    /// Transmit stopped because the backend was not ready; resumed on its next event.
    tx_stalled: bool,
    /// Rate limits (see `limits`); unlimited by default.
    limits: NetLimits,
}

impl Net {
    pub fn new(backend: Box<dyn Backend>, mac: [u8; 6]) -> Result<Self, NetError> {
        let offloads = if backend.vnet_hdr() {
            backend.offload_features() & offload::ALL
        } else {
            0
        };
        let avail =
            (1u64 << VIRTIO_NET_F_MAC) | (1u64 << VIRTIO_NET_F_STATUS) | features::RING_INDIRECT_DESC | offloads;
        let common = DeviceCommon::new(VIRTIO_ID_NET, avail, &[QUEUE_SIZE, QUEUE_SIZE]).map_err(NetError::EventFd)?;
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&mac);
        let status = u16::try_from(VIRTIO_NET_S_LINK_UP).unwrap_or(1);
        config[6..8].copy_from_slice(&status.to_le_bytes());
        Ok(Self {
            common,
            backend,
            config,
            pending: None,
            rx_buf: vec![0; HDR_LEN + MAX_FRAME],
            tx_buf: Vec::with_capacity(HDR_LEN + MAX_FRAME),
            descs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            metrics: Arc::default(),
            tx_stalled: false,
            limits: NetLimits::default(),
        })
    }

    /// Limits what the guest receives (`rx`) and sends (`tx`): bytes (`bps`) and frames
    /// (`iops`) a second; zero fields are unlimited. Call before [`Net::backend_fd`].
    pub fn set_rate_limits(
        &mut self,
        rx: Limits,
        tx: Limits,
        clock: &dyn Fn() -> Box<dyn Clock>,
    ) -> Result<(), NetError> {
        self.limits = NetLimits::new(rx, tx, self.backend.event_fd(), clock).map_err(NetError::RateLimiter)?;
        Ok(())
    }

    /// The timerfds of the receive and transmit limiters, where set.
    pub fn rate_limit_fds(&self) -> (Option<RawFd>, Option<RawFd>) {
        (
            self.limits.rx.as_ref().map(AsRawFd::as_raw_fd),
            self.limits.tx.as_ref().map(AsRawFd::as_raw_fd),
        )
    }

    /// The receive limiter's timer fired: receive again.
    pub fn rx_rate_limit_fired(&mut self) {
        if let Some(l) = &mut self.limits.rx {
            l.timer_fired();
        }
        if let Some(g) = &mut self.limits.gate {
            g.open();
        }
        self.process_rx();
    }

    /// The transmit limiter's timer fired: transmit again.
    pub fn tx_rate_limit_fired(&mut self) {
        if let Some(l) = &mut self.limits.tx {
            l.timer_fired();
        }
        self.process_tx();
    }

    /// This interface's counters.
    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }

    /// The fd the event loop should watch for received frames (see [`Net::backend_event`]).
    pub fn backend_fd(&self) -> Option<RawFd> {
        match &self.limits.gate {
            Some(gate) => Some(gate.fd()),
            None => self.backend.event_fd(),
        }
    }

    /// The backend's fd became readable: deliver what arrived, and resume a stalled transmit.
    pub fn backend_event(&mut self) {
        self.backend.ack_event();
        if self.tx_stalled && self.backend.tx_ready() {
            self.process_tx();
        }
        self.process_rx();
    }

    /// Moves received frames into the driver's receive buffers until the backend has no more
    /// or the driver has no more buffers (then the frame waits for the next receive kick).
    fn process_rx(&mut self) {
        let mut used_any = false;
        loop {
            if self.pending.is_none() {
                if let Some(l) = &mut self.limits.rx {
                    if !l.admit() {
                        self.metrics.rx_rate_limiter_throttled.inc();
                        if let Some(g) = &mut self.limits.gate {
                            g.close();
                        }
                        break;
                    }
                }
            }
            let len = match self.pending.take() {
                Some(len) => len,
                None => match self.recv_packet() {
                    Ok(Some(len)) => len,
                    Ok(None) => continue,
                    Err(()) => break,
                },
            };
            let Some(active) = self.common.active() else {
                self.pending = Some(len);
                break;
            };
            let Some(q) = active.queues.get_mut(RX) else {
                self.pending = Some(len);
                break;
            };
            let head = match pop_chain(q, &active.mem, &mut self.descs) {
                Ok(Some(head)) => head,
                Ok(None) => {
                    self.metrics.no_rx_avail_buffer.inc();
                    self.pending = Some(len);
                    break;
                }
                Err(e) => {
                    self.common.fail(format_args!("receive queue: {e}"));
                    break;
                }
            };
            let m = &self.metrics;
            let frame_len = len.saturating_sub(HDR_LEN);
            let written = match write_rx_packet(&active.mem, &self.descs, &self.rx_buf[..len]) {
                Some(n) => {
                    m.rx_packets_count.inc();
                    m.rx_bytes_count.add(u64::try_from(frame_len).unwrap_or(0));
                    if let Some(l) = &mut self.limits.rx {
                        l.charge(u64::try_from(frame_len).unwrap_or(0));
                    }
                    n
                }
                None => {
                    ::virtio::guest_warn(format_args!(
                        "virtio-net: a {frame_len}-byte frame does not fit the receive buffer; dropped"
                    ));
                    m.rx_fails.inc();
                    0
                }
            };
            if let Err(e) = q.add_used(&active.mem, head, written) {
                self.common.fail(format_args!("cannot add to the used ring: {e}"));
                break;
            }
            used_any = true;
        }
        if used_any {
            if let Some(active) = self.common.active() {
                active.interrupt.signal_used();
            }
        }
    }

    /// Reads one packet from the backend into `rx_buf` with a header ready for the driver:
    /// its length, `Ok(None)` for one dropped (try the next), `Err` when nothing is waiting.
    fn recv_packet(&mut self) -> Result<Option<usize>, ()> {
        let vnet = self.backend.vnet_hdr();
        let acked = self.acked_features();
        let at = if vnet { 0 } else { HDR_LEN };
        let len = match self.backend.recv(&mut self.rx_buf[at..]) {
            Ok(Some(n)) => at + n,
            Ok(None) => return Err(()),
            Err(e) => {
                self.metrics.tap_read_fails.inc();
                log::warn!("virtio-net: receive from the backend failed: {e}");
                return Err(());
            }
        };
        let Some(hdr) = self.rx_buf.first_chunk_mut::<HDR_LEN>() else {
            return Err(());
        };
        if !vnet {
            *hdr = [0; HDR_LEN];
        }
        if len < HDR_LEN || !offload::fix_rx_header(hdr, acked) {
            self.metrics.rx_fails.inc();
            return Ok(None);
        }
        Ok(Some(len))
    }

    /// Sends every available transmit chain, or as many as the backend takes now.
    fn process_tx(&mut self) {
        let mut used_any = false;
        let m = &self.metrics;
        let acked = self.acked_features();
        let vnet = self.backend.vnet_hdr();
        loop {
            self.tx_stalled = !self.backend.tx_ready();
            if self.tx_stalled {
                break;
            }
            if let Some(l) = &mut self.limits.tx {
                if !l.admit() {
                    m.tx_rate_limiter_throttled.inc();
                    break;
                }
            }
            let Some(active) = self.common.active() else { break };
            let Some(q) = active.queues.get_mut(TX) else { break };
            let head = match pop_chain(q, &active.mem, &mut self.descs) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    self.common.fail(format_args!("transmit queue: {e}"));
                    break;
                }
            };
            match read_tx_packet(&active.mem, &self.descs, &mut self.tx_buf) {
                Some(packet) => {
                    let (hdr, frame) = packet.split_at(HDR_LEN.min(packet.len()));
                    // Without vnet headers the backend never sees the header: ignore it.
                    let checked = match hdr.first_chunk::<HDR_LEN>() {
                        Some(h) if vnet => offload::check_tx_header(h, frame.len(), acked),
                        Some(_) => Ok(()),
                        None => Err("no header"),
                    };
                    let out = if vnet { packet } else { frame };
                    match checked.map(|()| self.backend.send(out)) {
                        Ok(Ok(())) => {
                            m.tx_packets_count.inc();
                            m.tx_bytes_count.add(u64::try_from(frame.len()).unwrap_or(0));
                            if let Some(l) = &mut self.limits.tx {
                                l.charge(u64::try_from(frame.len()).unwrap_or(0));
                            }
                        }
                        Ok(Err(e)) => {
                            m.tap_write_fails.inc();
                            log::debug!("virtio-net: frame of {} bytes not sent: {e}", frame.len());
                        }
                        Err(why) => {
                            m.tx_malformed_frames.inc();
                            ::virtio::guest_warn(format_args!("virtio-net: transmit header dropped: {why}"))
                        }
                    }
                }
                None => {
                    m.tx_malformed_frames.inc();
                    ::virtio::guest_warn(format_args!("virtio-net: malformed transmit chain dropped"))
                }
            }
            if let Err(e) = q.add_used(&active.mem, head, 0) {
                self.common.fail(format_args!("cannot add to the used ring: {e}"));
                break;
            }
            used_any = true;
        }
        if used_any {
            if let Some(active) = self.common.active() {
                active.interrupt.signal_used();
            }
        }
    }
}

impl VirtioDevice for Net {
    fn common(&self) -> &DeviceCommon {
        &self.common
    }
    fn common_mut(&mut self) -> &mut DeviceCommon {
        &mut self.common
    }
    fn config_space(&self) -> &[u8] {
        &self.config
    }
    fn activate(&mut self, activated: Activated) -> Result<(), ActivateError> {
        let acked = self.acked_features();
        let unknown = acked & offload::ALL & !self.avail_features();
        if unknown != 0 {
            // Only a restored snapshot gets here: its tap was opened on a host with more.
            return Err(ActivateError::Device(format!(
                "the driver acked offload features {unknown:#x} this network backend cannot honour"
            )));
        }
        self.backend
            .set_offloads(acked)
            .map_err(|e| ActivateError::Device(format!("cannot set the tap's offloads: {e}")))?;
        self.store_activation(activated)
    }
    fn reset(&mut self) {
        if let Err(e) = self.backend.set_offloads(0) {
            log::warn!("virtio-net: cannot clear the tap's offloads: {e}");
        }
        self.pending = None;
        self.common.reset();
    }
    fn process_queue(&mut self, index: usize) {
        match index {
            RX => self.process_rx(),
            TX => self.process_tx(),
            _ => {}
        }
    }
}

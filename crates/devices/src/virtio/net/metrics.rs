//! virtio-net counters (Firecracker's `net` metric names), one set per interface.

use crate::metric_fields;
use crate::metrics::{Counter, Field, MetricGroup};

#[derive(Debug, Default)]
pub struct NetMetrics {
    /// Frame bytes delivered to the guest (without the virtio-net header).
    pub rx_bytes_count: Counter,
    pub rx_packets_count: Counter,
    /// Frames dropped because they did not fit the guest's receive buffer (or, from a tap, used
    /// a segmentation offload the driver had not accepted).
    pub rx_fails: Counter,
    /// Times a received frame waited because the guest had posted no receive buffer.
    pub no_rx_avail_buffer: Counter,
    pub tap_read_fails: Counter,
    /// Frame bytes the guest sent (without the virtio-net header).
    pub tx_bytes_count: Counter,
    pub tx_packets_count: Counter,
    pub tx_malformed_frames: Counter,
    pub tap_write_fails: Counter,
    /// Times the receive / transmit rate limiter held frames back.
    pub rx_rate_limiter_throttled: Counter,
    pub tx_rate_limiter_throttled: Counter,
}

impl MetricGroup for NetMetrics {
    fn fields(&self) -> Vec<Field> {
        metric_fields!(self;
            rx_bytes_count => "Frame bytes delivered to the guest.",
            rx_packets_count => "Frames delivered to the guest.",
            rx_fails => "Frames dropped: too big for the guest's receive buffer, or an offload it did not accept.",
            no_rx_avail_buffer => "Times a frame waited for the guest to post receive buffers.",
            tap_read_fails => "Failed reads from the host backend.",
            tx_bytes_count => "Frame bytes the guest sent.",
            tx_packets_count => "Frames the guest sent.",
            tx_malformed_frames => "Malformed transmit chains dropped.",
            tap_write_fails => "Frames the host backend did not take.",
            rx_rate_limiter_throttled => "Times the receive rate limiter held frames back.",
            tx_rate_limiter_throttled => "Times the transmit rate limiter held frames back.",
        )
    }
}

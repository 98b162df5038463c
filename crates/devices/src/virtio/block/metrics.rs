//! virtio-blk counters (Firecracker's `block` metric names), one set per drive.

use crate::metric_fields;
use crate::metrics::{Counter, Field, MetricGroup};

#[derive(Debug, Default)]
pub struct BlockMetrics {
    pub read_bytes: Counter,
    pub write_bytes: Counter,
    pub read_count: Counter,
    pub write_count: Counter,
    pub flush_count: Counter,
    /// Requests that finished with an error status (I/O error, out of range, unsupported).
    pub execute_fails: Counter,
    /// Descriptor chains that are not a virtio-blk request at all.
    pub invalid_reqs_count: Counter,
    /// Times the queue was run (guest kicks and rate-limiter wake-ups).
    pub queue_event_count: Counter,
    /// Times the rate limiter held a request back.
    pub rate_limiter_throttled_events: Counter,
}

impl MetricGroup for BlockMetrics {
    fn fields(&self) -> Vec<Field> {
        metric_fields!(self;
            read_bytes => "Bytes the guest read from the drive.",
            write_bytes => "Bytes the guest wrote to the drive.",
            read_count => "Read requests completed.",
            write_count => "Write requests completed.",
            flush_count => "Flush requests completed.",
            execute_fails => "Requests completed with an error status.",
            invalid_reqs_count => "Malformed requests ignored.",
            queue_event_count => "Queue runs (kicks and rate-limiter wake-ups).",
            rate_limiter_throttled_events => "Times the rate limiter held requests back.",
        )
    }
}

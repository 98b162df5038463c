//! virtio-rng counters (Firecracker's `entropy` metric names).

use crate::metric_fields;
use crate::metrics::{Counter, Field, MetricGroup};

#[derive(Debug, Default)]
pub struct RngMetrics {
    pub entropy_bytes: Counter,
    /// Requests (descriptor chains) served.
    pub entropy_event_count: Counter,
    pub host_rng_fails: Counter,
}

impl MetricGroup for RngMetrics {
    fn fields(&self) -> Vec<Field> {
        metric_fields!(self;
            entropy_bytes => "Random bytes given to the guest.",
            entropy_event_count => "Entropy requests served.",
            host_rng_fails => "Failed getrandom(2) calls.",
        )
    }
}

//! i8042 counters, under Firecracker's `i8042` metric names.

use crate::metric_fields;
use crate::metrics::{Counter, Field, MetricGroup};

#[derive(Debug, Default)]
pub struct I8042Metrics {
    /// Reads of the data port with nothing in the output buffer.
    pub missed_read_count: Counter,
    /// Writes that went nowhere: unknown controller commands, bytes for the missing auxiliary
    /// port, keys or replies that did not fit in a full buffer, odd-sized accesses.
    pub missed_write_count: Counter,
    /// Bytes the guest read from the data port.
    pub read_count: Counter,
    /// Reset requests from the guest.
    pub reset_count: Counter,
    /// Bytes the guest wrote to the data and command ports.
    pub write_count: Counter,
}

impl MetricGroup for I8042Metrics {
    fn fields(&self) -> Vec<Field> {
        metric_fields!(self;
            missed_read_count => "Reads of the i8042 data port with an empty output buffer.",
            missed_write_count => "i8042 writes or keys that were dropped.",
            read_count => "Bytes read from the i8042 data port.",
            reset_count => "Reset requests through the i8042.",
            write_count => "Bytes written to the i8042 ports.",
        )
    }
}

//! COM1 counters (Firecracker's `uart` metric names), counted where the UART's output meets
//! the host: a `Write` wrapper around the console sink.

use std::io::Write;
use std::sync::Arc;

use crate::metric_fields;
use crate::metrics::{Counter, Field, MetricGroup};

#[derive(Debug, Default)]
pub struct UartMetrics {
    /// Bytes the guest transmitted that reached the host's output.
    pub write_count: Counter,
    /// Output writes that failed (closed or full host output).
    pub error_count: Counter,
    pub flush_count: Counter,
}

impl MetricGroup for UartMetrics {
    fn fields(&self) -> Vec<Field> {
        metric_fields!(self;
            write_count => "Bytes the guest transmitted on COM1 that reached the host.",
            error_count => "Failed writes of COM1 output to the host.",
            flush_count => "Flushes of COM1 output.",
        )
    }
}

/// Counts what passes through to `inner`.
pub(crate) struct CountingWriter {
    pub(crate) inner: Box<dyn Write + Send>,
    pub(crate) metrics: Arc<UartMetrics>,
}

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        match &r {
            Ok(n) => self.metrics.write_count.add(u64::try_from(*n).unwrap_or(u64::MAX)),
            Err(_) => self.metrics.error_count.inc(),
        }
        r
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.metrics.flush_count.inc();
        self.inner.flush()
    }
}

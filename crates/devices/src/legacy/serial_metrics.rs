//! COM1 counters (Firecracker's `uart` metric names), counted where the UART's output meets
//! the host: a `Write` wrapper around the console sink.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::rate_limiter::{Clock, MonotonicClock, TokenBucket};

use crate::metric_fields;
use crate::metrics::{Counter, Field, MetricGroup};

#[derive(Debug, Default)]
pub struct UartMetrics {
    /// Bytes the guest transmitted that reached the host's output.
    pub write_count: Counter,
    /// Output writes that failed (closed or full host output).
    pub error_count: Counter,
    pub flush_count: Counter,
    /// Output bytes dropped by the output rate limit (Firecracker's `PUT /serial` rate_limiter).
    pub rate_limiter_dropped_bytes: Counter,
}

impl MetricGroup for UartMetrics {
    fn fields(&self) -> Vec<Field> {
        metric_fields!(self;
            write_count => "Bytes the guest transmitted on COM1 that reached the host.",
            error_count => "Failed writes of COM1 output to the host.",
            flush_count => "Flushes of COM1 output.",
            rate_limiter_dropped_bytes => "COM1 output bytes dropped by the output rate limit.",
        )
    }
}

/// The output rate limit: a byte bucket and where time comes from.
pub(crate) struct OutputLimit {
    pub(crate) bucket: TokenBucket,
    pub(crate) clock: MonotonicClock,
}

/// Counts what passes through to `inner`; with a limit, drops (and counts) what exceeds it.
pub(crate) struct CountingWriter {
    pub(crate) inner: Box<dyn Write + Send>,
    pub(crate) metrics: Arc<UartMetrics>,
    pub(crate) limit: Arc<Mutex<Option<OutputLimit>>>,
}

impl CountingWriter {
    /// How much of `len` bytes the limit lets through now (taking them from the bucket).
    fn allowed(&self, len: usize) -> usize {
        let mut limit = self.limit.lock().unwrap_or_else(|e| e.into_inner());
        let Some(l) = limit.as_mut() else { return len };
        let now = l.clock.now();
        let have = usize::try_from(l.bucket.tokens(now).max(0)).unwrap_or(usize::MAX);
        let n = have.min(len);
        l.bucket.take(n as u64);
        n
    }
}

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.allowed(buf.len());
        if n < buf.len() {
            // Silently dropped, as Firecracker does: the guest's UART never stalls on it.
            self.metrics.rate_limiter_dropped_bytes.add((buf.len() - n) as u64);
            if n == 0 {
                return Ok(buf.len());
            }
        }
        let r = self.inner.write(&buf[..n]);
        match &r {
            Ok(w) => self.metrics.write_count.add(u64::try_from(*w).unwrap_or(u64::MAX)),
            Err(_) => self.metrics.error_count.inc(),
        }
        // Whole: the dropped tail counts as taken.
        r.map(|w| if w == n { buf.len() } else { w })
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.metrics.flush_count.inc();
        self.inner.flush()
    }
}

//! Cheap device counters: each device model owns an `Arc` of its counters and bumps them with
//! relaxed atomic adds on the event loop (or vCPU) thread; the VMM reads them from its event
//! loop to render metrics (`vmm::metrics`). Nothing here knows about JSON or Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One counter as a device reports it: its name (Firecracker's metric name where Firecracker
/// has one), what it counts, and its value now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
}

/// A device's counters, read all at once.
pub trait MetricGroup: Send + Sync {
    fn fields(&self) -> Vec<Field>;
}

/// `Field { name, help, value: counter.get() }` for a list of counters.
#[macro_export]
macro_rules! metric_fields {
    ($self:ident; $($name:ident => $help:literal),* $(,)?) => {
        vec![$($crate::metrics::Field { name: stringify!($name), help: $help, value: $self.$name.get() }),*]
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Two {
        a: Counter,
        b: Counter,
    }
    impl MetricGroup for Two {
        fn fields(&self) -> Vec<Field> {
            metric_fields!(self; a => "the a's", b => "the b's")
        }
    }

    #[test]
    fn counters_add_and_report_by_name() {
        let t = Two::default();
        t.a.inc();
        t.a.add(41);
        t.b.inc();
        let f = t.fields();
        assert_eq!((f[0].name, f[0].value, f[0].help), ("a", 42, "the a's"));
        assert_eq!((f[1].name, f[1].value), ("b", 1));
    }
}

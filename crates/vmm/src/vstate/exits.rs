//! Exit statistics: how often each vCPU trapped to the VMM, and why (the trap-and-emulate view
//! of a running guest). The per-reason counts are [`ExitCounters`]: atomics written only by the
//! vCPU thread that owns them (a relaxed load and store, no locked instruction on the exit
//! path) and readable by the event loop at any time (`GET /hearth/exit-stats`, metrics). The
//! rest (fix-ups, profile samples) is read once the vCPU has stopped (`--stats`, `--profile`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why `KVM_RUN` returned, as hearth counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitKind {
    IoIn,
    IoOut,
    MmioRead,
    MmioWrite,
    /// I/O to an address no device claims.
    Unmapped,
    Hlt,
    /// KVM_RUN interrupted by a signal (a kick from the VMM) or asked to retry.
    Interrupted,
    /// An instruction the host's emulator could not run; `fixups` says which.
    EmulationFailure,
    Shutdown,
    SystemEvent,
    Other,
}

impl ExitKind {
    pub const ALL: [ExitKind; 11] = [
        ExitKind::IoIn,
        ExitKind::IoOut,
        ExitKind::MmioRead,
        ExitKind::MmioWrite,
        ExitKind::Unmapped,
        ExitKind::Hlt,
        ExitKind::Interrupted,
        ExitKind::EmulationFailure,
        ExitKind::Shutdown,
        ExitKind::SystemEvent,
        ExitKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExitKind::IoIn => "io_in",
            ExitKind::IoOut => "io_out",
            ExitKind::MmioRead => "mmio_read",
            ExitKind::MmioWrite => "mmio_write",
            ExitKind::Unmapped => "unmapped_io",
            ExitKind::Hlt => "hlt",
            ExitKind::Interrupted => "interrupted",
            ExitKind::EmulationFailure => "emulation_failure",
            ExitKind::Shutdown => "shutdown",
            ExitKind::SystemEvent => "system_event",
            ExitKind::Other => "other",
        }
    }
}

/// One vCPU's exit counts by reason, shared between its thread (the only writer) and readers.
#[derive(Debug, Default)]
pub struct ExitCounters([AtomicU64; ExitKind::ALL.len()]);

impl ExitCounters {
    /// Adds one exit of `kind`. Only the owning vCPU thread calls this, so a plain load and
    /// store suffice: readers see every value whole (64-bit atomics), never a lost update.
    fn bump(&self, kind: ExitKind) {
        let c = &self.0[kind as usize];
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }
    pub fn get(&self, kind: ExitKind) -> u64 {
        self.0[kind as usize].load(Ordering::Relaxed)
    }
    /// Every reason with its count (zeros included), in [`ExitKind::ALL`] order.
    pub fn by_reason(&self) -> Vec<(&'static str, u64)> {
        ExitKind::ALL.iter().map(|&k| (k.name(), self.get(k))).collect()
    }
}

/// One vCPU's counters.
#[derive(Debug, Default)]
pub struct ExitStats {
    counts: Arc<ExitCounters>,
    /// Completed instruction fix-ups by kind (e.g. "int3" → 1).
    pub fixups: BTreeMap<&'static str, u64>,
    /// When this vCPU first entered `KVM_RUN`.
    pub first_run: Option<std::time::Instant>,
    /// Guest RIP samples taken when the profiler kicked this vCPU (see `crate::profile`).
    pub samples: crate::profile::Samples,
}

impl ExitStats {
    pub fn count(&mut self, kind: ExitKind) {
        self.counts.bump(kind);
    }
    /// The live counts, for readers on other threads.
    pub fn counters(&self) -> Arc<ExitCounters> {
        self.counts.clone()
    }
    pub fn count_fixup(&mut self, name: &'static str) {
        *self.fixups.entry(name).or_default() += 1;
    }
    pub fn get(&self, kind: ExitKind) -> u64 {
        self.counts.get(kind)
    }
    pub fn total(&self) -> u64 {
        ExitKind::ALL.iter().map(|&k| self.get(k)).sum()
    }
}

/// Renders a table of all vCPUs' counters (rows: exit kinds with a non-zero count).
pub fn render_table(stats: &[ExitStats]) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<20}", "exit reason");
    for i in 0..stats.len() {
        let _ = write!(out, " {:>12}", format!("vcpu{i}"));
    }
    out.push('\n');
    let mut row = |name: &str, vals: Vec<u64>| {
        if vals.iter().any(|v| *v != 0) {
            let _ = write!(out, "{name:<20}");
            for v in vals {
                let _ = write!(out, " {v:>12}");
            }
            out.push('\n');
        }
    };
    for k in ExitKind::ALL {
        row(k.name(), stats.iter().map(|s| s.get(k)).collect());
    }
    let mut fixups: Vec<&'static str> = stats.iter().flat_map(|s| s.fixups.keys().copied()).collect();
    fixups.sort_unstable();
    fixups.dedup();
    for f in fixups {
        row(
            &format!("  fixup {f}"),
            stats.iter().map(|s| s.fixups.get(f).copied().unwrap_or(0)).collect(),
        );
    }
    row("total", stats.iter().map(ExitStats::total).collect());
    out
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let mut a = ExitStats::default();
        a.count(ExitKind::IoOut);
        a.count(ExitKind::IoOut);
        a.count(ExitKind::EmulationFailure);
        a.count_fixup("int3");
        let mut b = ExitStats::default();
        b.count(ExitKind::MmioRead);
        assert_eq!(a.get(ExitKind::IoOut), 2);
        assert_eq!(a.total(), 3);
        let t = render_table(&[a, b]);
        assert!(t.contains("io_out"));
        assert!(t.contains("fixup int3"));
        assert!(!t.contains("hlt"), "zero rows are omitted");
        let total = t.lines().last().unwrap();
        assert!(total.starts_with("total") && total.ends_with(" 1"));
    }

    #[test]
    fn counters_are_readable_while_the_owner_counts() {
        let mut s = ExitStats::default();
        let live = s.counters();
        let writer = std::thread::spawn(move || {
            for _ in 0..10_000 {
                s.count(ExitKind::MmioWrite);
            }
            s
        });
        let mut seen = 0;
        while !writer.is_finished() {
            let now = live.get(ExitKind::MmioWrite);
            assert!(now >= seen, "counts never go back");
            seen = now;
        }
        let s = writer.join().unwrap();
        assert_eq!(live.get(ExitKind::MmioWrite), 10_000);
        assert_eq!(s.total(), 10_000);
        let by = live.by_reason();
        assert_eq!(by.len(), ExitKind::ALL.len());
        assert!(by.contains(&("mmio_write", 10_000)) && by.contains(&("hlt", 0)));
    }
}

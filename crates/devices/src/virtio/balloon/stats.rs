//! The guest's memory statistics (virtio 1.2 §5.5.6.3): the tagged 10-byte records the driver
//! puts in its stats buffer, parsed into [`BalloonStats`] (field names as Firecracker's
//! `GET /balloon/statistics`).

use vm_memory::{Bytes, GuestAddress};

use crate::virtio::Memory;

/// One record: `le16 tag; le64 val;`, packed.
pub const STAT_LEN: usize = 10;
/// At most this many records are read per buffer: Linux sends at most 10 (one per tag), and a
/// guest must not make the device read an unbounded buffer.
const MAX_STATS: usize = 64;

pub const S_SWAP_IN: u16 = 0;
pub const S_SWAP_OUT: u16 = 1;
pub const S_MAJFLT: u16 = 2;
pub const S_MINFLT: u16 = 3;
pub const S_MEMFREE: u16 = 4;
pub const S_MEMTOT: u16 = 5;
pub const S_AVAIL: u16 = 6;
pub const S_CACHES: u16 = 7;
pub const S_HTLB_PGALLOC: u16 = 8;
pub const S_HTLB_PGFAIL: u16 = 9;

/// The balloon's size and the guest's last reported statistics. Memory amounts are in bytes
/// (as the guest reports them); a statistic the guest did not send is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BalloonStats {
    /// Target size of the balloon, in 4 KiB pages and in MiB.
    pub target_pages: u32,
    pub target_mib: u32,
    /// Size the driver says the balloon has reached.
    pub actual_pages: u32,
    pub actual_mib: u32,
    pub swap_in: Option<u64>,
    pub swap_out: Option<u64>,
    pub major_faults: Option<u64>,
    pub minor_faults: Option<u64>,
    pub free_memory: Option<u64>,
    pub total_memory: Option<u64>,
    pub available_memory: Option<u64>,
    pub disk_caches: Option<u64>,
    pub hugetlb_allocations: Option<u64>,
    pub hugetlb_failures: Option<u64>,
}

impl BalloonStats {
    /// Records one tagged value; unknown tags are ignored (§5.5.6.3: the device must ignore them).
    pub fn set(&mut self, tag: u16, val: u64) {
        let slot = match tag {
            S_SWAP_IN => &mut self.swap_in,
            S_SWAP_OUT => &mut self.swap_out,
            S_MAJFLT => &mut self.major_faults,
            S_MINFLT => &mut self.minor_faults,
            S_MEMFREE => &mut self.free_memory,
            S_MEMTOT => &mut self.total_memory,
            S_AVAIL => &mut self.available_memory,
            S_CACHES => &mut self.disk_caches,
            S_HTLB_PGALLOC => &mut self.hugetlb_allocations,
            S_HTLB_PGFAIL => &mut self.hugetlb_failures,
            _ => return,
        };
        *slot = Some(val);
    }

    /// Parses whole records from `bytes` (a trailing partial record is ignored).
    pub fn parse_into(&mut self, bytes: &[u8]) {
        for rec in bytes.chunks_exact(STAT_LEN).take(MAX_STATS) {
            let tag = u16::from_le_bytes([rec[0], rec[1]]);
            let mut v = [0u8; 8];
            v.copy_from_slice(&rec[2..STAT_LEN]);
            self.set(tag, u64::from_le_bytes(v));
        }
    }

    /// Reads the records of one stats chain's device-readable buffers (each buffer on its own:
    /// Linux sends one). Returns false when a buffer cannot be read.
    pub fn read_from(&mut self, mem: &Memory, bufs: impl Iterator<Item = (GuestAddress, u32)>) -> bool {
        let mut buf = [0u8; STAT_LEN * MAX_STATS];
        for (addr, len) in bufs {
            let len = usize::try_from(len).unwrap_or(usize::MAX).min(buf.len());
            let len = len - len % STAT_LEN;
            if mem.read_slice(&mut buf[..len], addr).is_err() {
                return false;
            }
            self.parse_into(&buf[..len]);
        }
        true
    }

    /// One line, `name=value` for each statistic the guest sent (for logs and `--stats`).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "target_mib={} actual_mib={} target_pages={} actual_pages={}",
            self.target_mib, self.actual_mib, self.target_pages, self.actual_pages
        );
        let fields = [
            ("swap_in", self.swap_in),
            ("swap_out", self.swap_out),
            ("major_faults", self.major_faults),
            ("minor_faults", self.minor_faults),
            ("free_memory", self.free_memory),
            ("total_memory", self.total_memory),
            ("available_memory", self.available_memory),
            ("disk_caches", self.disk_caches),
            ("hugetlb_allocations", self.hugetlb_allocations),
            ("hugetlb_failures", self.hugetlb_failures),
        ];
        for (name, v) in fields {
            if let Some(v) = v {
                s.push_str(&format!(" {name}={v}"));
            }
        }
        s
    }
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;

//! virtio-balloon (virtio 1.2 §5.5, device type 5): the host sets a target (`num_pages`), the
//! guest driver gives pages to the balloon (inflate) or takes them back (deflate), and the host
//! releases the memory behind inflated pages (`MADV_DONTNEED`). Also: memory statistics on the
//! stats queue (polled by a timer), and free page reporting (freed guest memory is released too).
//!
//! `device` holds the device (features, config space, queue numbering, the control handle),
//! `handler` turns PFNs into ranges and releases host memory, `stats` parses the statistics.
//! Not here: free page hinting, page poisoning, MUST_TELL_HOST, persist, metrics.

mod device;
mod handler;
mod stats;

pub use device::{Balloon, BalloonConfig, BalloonCounters, BalloonError, BalloonHandle, QueueLayout};
pub use handler::{PfnRange, PfnRanges};
pub use stats::BalloonStats;

//! virtio-blk (virtio 1.2 §5.2) on a raw image file.
//!
//! `device` holds the device (features, config space, the image, the optional rate limiter)
//! and `handler` executes the requests of one queue, `discard` the DISCARD and WRITE_ZEROES
//! ones, `direct` the bounce buffer of O_DIRECT drives, `metrics` its counters. Not yet here:
//! asynchronous I/O (requests run synchronously on the event loop).

mod device;
mod direct;
mod discard;
mod handler;
mod metrics;

pub use device::{Block, BlockError, SECTOR_SIZE};
pub use metrics::BlockMetrics;

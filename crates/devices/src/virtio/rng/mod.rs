//! virtio-rng / entropy device (virtio 1.2 §5.4): fills the driver's device-writable buffers
//! from the host's getrandom(2). `metrics` counts what it gave. Not yet here: persist, a rate limiter.

mod device;
mod metrics;

pub use device::{Rng, RngError};
pub use metrics::RngMetrics;

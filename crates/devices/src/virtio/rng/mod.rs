//! virtio-rng / entropy device (virtio 1.2 §5.4): fills the driver's device-writable buffers
//! from the host's getrandom(2). Not yet here: persist, metrics, a rate limiter.

mod device;

pub use device::{Rng, RngError};

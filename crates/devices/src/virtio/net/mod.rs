//! virtio-net (virtio 1.2 §5.1) on a host tap device: one receive and one transmit queue, a MAC
//! in the config space, no offloads. Every frame carries the 12-byte `virtio_net_hdr_v1` in
//! front: stripped on transmit, prepended (zeroed) on receive.
//!
//! Receive is driven by the tap becoming readable (an event-loop handler, see the builder) and
//! by the driver kicking the receive queue after it posted buffers; a frame that arrives while
//! the driver has no buffers is kept and delivered on the next kick.

mod device;
mod handler;
mod metrics;
mod tap;

pub use device::{Backend, Net, NetError};
pub use metrics::NetMetrics;
pub use tap::Tap;

//! virtio-net (virtio 1.2 §5.1): one receive and one transmit queue, a MAC in the config space.
//! Every frame carries the 12-byte `virtio_net_hdr_v1` in front. Two host backends: a tap device
//! ([`Tap`], which takes the header as is, so checksum and TCP segmentation offloads work both
//! ways, receive in "big packets" mode: no MRG_RXBUF) and a passt child process giving the guest
//! user-mode NAT without root ([`Passt`], plain frames: no offloads, the header is stripped on
//! transmit and a zeroed one prepended on receive).
//!
//! Receive is driven by the backend becoming readable (an event-loop handler, see the builder)
//! and by the driver kicking the receive queue after it posted buffers; a frame that arrives
//! while the driver has no buffers is kept and delivered on the next kick. Transmit stops
//! taking chains while a backend cannot take more (passt's stream is full) and resumes when the
//! backend's event fd reports progress.

mod device;
mod framing;
mod handler;
mod limits;
mod metrics;
mod offload;
mod passt;
mod tap;

pub use device::{Backend, Net, NetError};
pub use metrics::NetMetrics;
pub use passt::{Passt, PasstError, PortForward, Protocol, GATEWAY_IP, GUEST_IP, GUEST_PREFIX_LEN};
pub use tap::Tap;

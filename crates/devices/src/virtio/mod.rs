//! virtio device models: each is a [`::virtio::VirtioDevice`] driven by the MMIO transport and
//! by the event loop (its queue work). The plumbing they share is the `virtio` crate.

pub mod balloon;
pub mod block;
pub mod net;
pub mod rng;
pub mod vsock;

pub use balloon::{Balloon, BalloonHandle};
pub use block::Block;
pub use net::Net;
pub use rng::Rng;
pub use vsock::Vsock;

/// Guest memory as the device models see it.
pub(crate) type Memory = ::virtio::Memory;

//! virtio-vsock (virtio 1.2 §5.10, device type 19) with a host side compatible with
//! Firecracker's hybrid vsock: host programs reach guest ports through one Unix socket
//! (`CONNECT <port>\n` → `OK <host_port>\n`, then a byte stream), and guest connections to
//! CID 2 port P are relayed to the Unix socket `<uds>_<P>`.
//!
//! - [`packet`]: the 44-byte header and packets in descriptor chains, checked;
//! - [`connection`]: one stream's state, credit accounting and bounded buffering;
//! - [`muxer`]: the host sockets (listener + connections in an own epoll) and the protocol;
//! - [`device`]: the virtio device, its rx(0)/tx(1)/event(2) queues.
//!
//! Stream sockets only (no SEQPACKET feature). hearth hand-writes this: no rust-vmm crate
//! implements a vsock device backend.

pub mod connection;
mod device;
pub mod muxer;
pub mod packet;

pub use device::{Vsock, VsockError};

//! Device models for hearth guests.
//!
//! Each device is a state machine behind the [`bus::BusDevice`] interface; devices raise
//! interrupts through an [`Interrupt`] trigger (an irqfd in a real VM, a counter in tests) and
//! never touch KVM directly.

pub mod interrupt;
pub mod legacy;
pub mod metrics;
pub mod rate_limiter;
pub mod virtio;

pub use interrupt::{EventFdTrigger, Interrupt};

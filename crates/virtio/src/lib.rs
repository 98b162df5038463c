//! virtio 1.x plumbing shared by every hearth virtio device (virtio 1.2, OASIS).
//!
//! Owns: the [`VirtioDevice`] trait and the [`DeviceCommon`] state every device embeds (features,
//! queue sizes, kick eventfds, the activated queues), the interrupt status a device and its
//! transport share ([`VirtioInterrupt`]), descriptor-chain validation ([`queue`]), and the
//! virtio-mmio transport ([`MmioTransport`], §4.2). Ring access itself is the rust-vmm
//! `virtio-queue` crate; guest memory is only touched through `vm-memory`.
//!
//! Does not own: device models (crates/devices/src/virtio/), KVM (the builder registers the
//! kick eventfds as ioeventfds and the interrupt as an irqfd), the event loop.

pub mod device;
pub mod interrupt;
pub mod mmio;
pub mod persist;
pub mod queue;
mod ratelimit;

pub use device::{ActivateError, Activated, DeviceCommon, VirtioDevice};
pub use interrupt::VirtioInterrupt;
pub use mmio::{MmioTransport, MMIO_LEN, NOTIFY_OFFSET};
pub use persist::{RestoreError, TransportState};
pub use ratelimit::guest_warn;

/// Guest memory as devices see it.
pub type Memory = vm_memory::GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>;

/// Device status bits (virtio 1.2 §2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// Feature bits every hearth device understands (virtio 1.2 §6).
pub mod features {
    /// Descriptors may point at indirect descriptor tables (§2.7.5.3).
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// virtio 1.x (non-legacy) device; hearth offers and requires it.
    pub const VERSION_1: u64 = 1 << 32;
}

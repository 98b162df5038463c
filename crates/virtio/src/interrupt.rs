//! The interrupt a virtio device raises: one line per device plus the InterruptStatus bits the
//! driver reads to learn why (virtio 1.2 §4.2.2: bit 0 used buffer, bit 1 configuration change).
//!
//! The trigger is `vm_superio::Trigger` rather than `devices::Interrupt` because `devices`
//! depends on this crate; `devices::EventFdTrigger` (an irqfd) implements both.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vm_superio::Trigger;

/// InterruptStatus bit: the device used a buffer in some queue.
pub const INT_VRING: u32 = 1;
/// InterruptStatus bit: the device configuration (or status) changed.
pub const INT_CONFIG: u32 = 2;

pub type SharedTrigger = Arc<dyn Trigger<E = io::Error> + Send + Sync>;

/// Shared by a device (which raises) and its transport (which shows and acknowledges).
#[derive(Clone)]
pub struct VirtioInterrupt {
    status: Arc<AtomicU32>,
    trigger: SharedTrigger,
}

impl VirtioInterrupt {
    pub fn new(trigger: SharedTrigger) -> Self {
        Self {
            status: Arc::new(AtomicU32::new(0)),
            trigger,
        }
    }

    /// Tells the driver that buffers were used.
    pub fn signal_used(&self) {
        self.signal(INT_VRING);
    }

    /// Tells the driver that the configuration or the device status changed.
    pub fn signal_config(&self) {
        self.signal(INT_CONFIG);
    }

    fn signal(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::AcqRel);
        if let Err(e) = self.trigger.trigger() {
            log::error!("virtio: cannot raise the device interrupt: {e}");
        }
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Restores the InterruptStatus register from a snapshot.
    pub(crate) fn set_status(&self, bits: u32) {
        self.status.store(bits, Ordering::Release);
    }

    pub(crate) fn clear(&self) {
        self.status.store(0, Ordering::Release);
    }
}

/// A trigger that counts, for tests.
#[derive(Default)]
pub struct CountingTrigger(pub AtomicU32);

impl CountingTrigger {
    pub fn count(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }
}

impl Trigger for CountingTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

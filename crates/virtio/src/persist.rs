//! Snapshot state of one virtio-mmio device: the transport's registers, the queues (the
//! driver-configured copies and, once the device is active, its live ones with their ring
//! positions), the negotiated features, and whatever the device model adds
//! ([`VirtioDevice::save_device`]).
//!
//! Restoring puts a freshly built device (same type, same backend) into that state and, if the
//! driver had set DRIVER_OK, activates it again with the saved queues — the guest's driver never
//! notices. Everything in a state file is untrusted: queues are validated against guest memory
//! exactly as at activation, and a mismatch fails the restore with a message, never a panic.

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState};

use crate::device::Activated;
use crate::mmio::MmioTransport;
use crate::status;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    #[error("the snapshot has a virtio device of type {saved} where this VM has type {built}")]
    DeviceType { saved: u32, built: u32 },
    #[error("virtio device type {dev}: the snapshot has {saved} queues, the device {built}")]
    QueueCount { dev: u32, saved: usize, built: usize },
    #[error("virtio device type {dev}: saved queue {queue} is invalid")]
    BadQueue { dev: u32, queue: usize },
    #[error("virtio device type {dev}: {what}")]
    Device { dev: u32, what: String },
}

/// `virtio_queue::QueueState`, which has no serde support.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedQueue {
    pub max_size: u16,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

impl From<QueueState> for SavedQueue {
    fn from(q: QueueState) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<SavedQueue> for QueueState {
    fn from(q: SavedQueue) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    pub device_type: u32,
    pub status: u32,
    pub features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub config_generation: u32,
    pub interrupt_status: u32,
    pub bad_queues: Vec<bool>,
    pub queues: Vec<SavedQueue>,
    pub acked_features: u64,
    pub broken: bool,
    /// The device's live queues (ring positions) if the driver had set DRIVER_OK.
    pub active_queues: Option<Vec<SavedQueue>>,
    /// Device-model state ([`VirtioDevice::save_device`]).
    pub device: Vec<u8>,
}

impl MmioTransport {
    /// The device's state for a snapshot. The VM must be paused (no vCPU touches the
    /// registers) and the event loop is the caller (no queue work runs meanwhile).
    pub fn save_state(&self) -> TransportState {
        let dev = self.device();
        let common = dev.common();
        let active_queues = common
            .activated()
            .map(|a| a.queues.iter().map(|q| SavedQueue::from(q.state())).collect());
        TransportState {
            device_type: dev.device_type(),
            status: self.status,
            features_sel: self.features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            config_generation: self.config_generation.wrapping_add(dev.common().config_epoch()),
            interrupt_status: self.interrupt.status(),
            bad_queues: self.bad_queues.clone(),
            queues: self.queues.iter().map(|q| SavedQueue::from(q.state())).collect(),
            acked_features: dev.acked_features(),
            broken: common.is_broken(),
            active_queues,
            device: dev.save_device(),
        }
    }

    /// Puts this freshly built transport and its device into a saved state.
    pub fn restore_state(&mut self, s: &TransportState) -> Result<(), RestoreError> {
        let built = self.device().device_type();
        if s.device_type != built {
            return Err(RestoreError::DeviceType {
                saved: s.device_type,
                built,
            });
        }
        let dev_type = built;
        let nqueues = self.queues.len();
        if s.queues.len() != nqueues || s.bad_queues.len() != nqueues {
            return Err(RestoreError::QueueCount {
                dev: dev_type,
                saved: s.queues.len(),
                built: nqueues,
            });
        }
        let to_queues = |saved: &[SavedQueue]| -> Result<Vec<Queue>, RestoreError> {
            saved
                .iter()
                .enumerate()
                .map(|(i, q)| {
                    Queue::try_from(QueueState::from(*q)).map_err(|_| RestoreError::BadQueue {
                        dev: dev_type,
                        queue: i,
                    })
                })
                .collect()
        };
        self.queues = to_queues(&s.queues)?;
        self.bad_queues = s.bad_queues.clone();
        self.status = s.status;
        self.features_sel = s.features_sel;
        self.driver_features_sel = s.driver_features_sel;
        self.driver_features = s.driver_features;
        self.queue_sel = s.queue_sel;
        self.config_generation = s.config_generation;
        self.interrupt.set_status(s.interrupt_status);
        let mut dev = self.device();
        dev.set_acked_features(s.acked_features);
        dev.restore_device(&s.device)
            .map_err(|what| RestoreError::Device { dev: dev_type, what })?;
        if let (Some(active), true) = (&s.active_queues, s.status & status::DRIVER_OK != 0) {
            if active.len() != nqueues {
                return Err(RestoreError::QueueCount {
                    dev: dev_type,
                    saved: active.len(),
                    built: nqueues,
                });
            }
            let queues = to_queues(active)?;
            if let Err(i) = crate::queue::queues_valid(&queues, &self.mem) {
                return Err(RestoreError::BadQueue {
                    dev: dev_type,
                    queue: i,
                });
            }
            dev.activate(Activated {
                mem: self.mem.clone(),
                interrupt: self.interrupt.clone(),
                queues,
            })
            .map_err(|e| RestoreError::Device {
                dev: dev_type,
                what: e.to_string(),
            })?;
        }
        if s.broken {
            dev.common_mut().set_broken();
        } else {
            dev.on_restored();
        }
        Ok(())
    }
}

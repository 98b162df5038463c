//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2): one device's registers in a
//! 4 KiB window on the MMIO bus.
//!
//! Runs on vCPU threads (each access is a vCPU exit). Queue kicks normally never get here:
//! the builder registers each queue's eventfd as an ioeventfd on [`NOTIFY_OFFSET`] with the
//! queue index as datamatch, so KVM signals the eventfd and the event loop does the work. A
//! kick that does arrive as an exit (no ioeventfd, or an unusual width) is forwarded to the
//! same eventfd, so there is one path for queue work either way.

use std::sync::{Arc, Mutex, MutexGuard};

use bus::BusDevice;
use virtio_queue::{Queue, QueueT};

use crate::device::{Activated, VirtioDevice};
use crate::queue::queues_valid;
use crate::{features, guest_warn, status, Memory, VirtioInterrupt};

/// Size of one device's MMIO window.
pub const MMIO_LEN: u64 = 0x1000;
/// QueueNotify, the register the ioeventfds watch.
pub const NOTIFY_OFFSET: u64 = 0x50;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x4854_4852; // "RHTH", hearth
const CONFIG_OFFSET: u64 = 0x100;

pub type SharedVirtioDevice = Arc<Mutex<dyn VirtioDevice>>;

pub struct MmioTransport {
    pub(crate) device: SharedVirtioDevice,
    pub(crate) mem: Memory,
    pub(crate) interrupt: VirtioInterrupt,
    pub(crate) queues: Vec<Queue>,
    /// Queues the driver gave an invalid size (see `write_queue_num`).
    pub(crate) bad_queues: Vec<bool>,
    pub(crate) status: u32,
    pub(crate) features_sel: u32,
    pub(crate) driver_features_sel: u32,
    pub(crate) driver_features: u64,
    pub(crate) queue_sel: u32,
    pub(crate) config_generation: u32,
}

impl MmioTransport {
    pub fn new(device: SharedVirtioDevice, mem: Memory, interrupt: VirtioInterrupt) -> Self {
        let queues = new_queues(&*lock(&device));
        Self {
            device,
            mem,
            interrupt,
            bad_queues: vec![false; queues.len()],
            queues,
            status: 0,
            features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            config_generation: 0,
        }
    }

    pub(crate) fn device(&self) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
        lock(&self.device)
    }

    /// The selected queue, if the driver may still configure it (§4.2.3.2: before DRIVER_OK,
    /// and while QueueReady is 0 except for QueueReady itself).
    fn queue_mut(&mut self) -> Option<&mut Queue> {
        if self.status & status::DRIVER_OK != 0 {
            return None;
        }
        let q = self.queues.get_mut(usize::try_from(self.queue_sel).ok()?)?;
        (!q.ready()).then_some(q)
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(usize::try_from(self.queue_sel).ok()?)
    }

    fn read_reg(&self, offset: u64) -> u32 {
        match offset {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => self.device().device_type(),
            0x0c => VENDOR_ID,
            0x10 => {
                let f = self.device().avail_features();
                match self.features_sel {
                    0 => low(f),
                    1 => high(f),
                    _ => 0,
                }
            }
            0x34 => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            0x44 => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            0x60 => self.interrupt.status(),
            0x70 => {
                let broken = self.device().common().is_broken();
                self.status | if broken { status::DEVICE_NEEDS_RESET } else { 0 }
            }
            // Shared memory regions (§4.2.2 SHMLenLow/High): none, length all-ones.
            0xb0 | 0xb4 => u32::MAX,
            0xfc => self
                .config_generation
                .wrapping_add(self.device().common().config_epoch()),
            _ => {
                guest_warn(format_args!("virtio-mmio: read of unknown register {offset:#x}"));
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            0x14 => self.features_sel = v,
            0x20 => self.write_driver_features(v),
            0x24 => self.driver_features_sel = v,
            0x30 => self.queue_sel = v,
            0x38 => self.write_queue_num(v),
            0x44 => self.write_queue_ready(v),
            0x50 => self.notify(v),
            0x64 => self.interrupt.ack(v),
            0x70 => self.write_status(v),
            0x80 => self.with_queue(|q| q.set_desc_table_address(Some(v), None)),
            0x84 => self.with_queue(|q| q.set_desc_table_address(None, Some(v))),
            0x90 => self.with_queue(|q| q.set_avail_ring_address(Some(v), None)),
            0x94 => self.with_queue(|q| q.set_avail_ring_address(None, Some(v))),
            0xa0 => self.with_queue(|q| q.set_used_ring_address(Some(v), None)),
            0xa4 => self.with_queue(|q| q.set_used_ring_address(None, Some(v))),
            0xac => {} // SHMSel: there are no shared memory regions to select.
            _ => guest_warn(format_args!(
                "virtio-mmio: write of {v:#x} to unknown register {offset:#x}"
            )),
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        match self.queue_mut() {
            Some(q) => f(q),
            None => guest_warn(format_args!(
                "virtio-mmio: queue {} cannot be configured now (no such queue, ready, or DRIVER_OK)",
                self.queue_sel
            )),
        }
    }

    /// QueueNum. virtio-queue keeps the old size on a bad one (0, not a power of two, above
    /// QueueNumMax); the driver would then disagree with the device about the ring layout, so
    /// such a queue is remembered as bad and activation fails (DEVICE_NEEDS_RESET).
    fn write_queue_num(&mut self, v: u32) {
        let sel = usize::try_from(self.queue_sel).unwrap_or(usize::MAX);
        let mut bad = false;
        self.with_queue(|q| bad = q.try_set_size(u16::try_from(v).unwrap_or(0)).is_err());
        if bad {
            guest_warn(format_args!("virtio-mmio: queue {sel}: bad size {v}"));
            if let Some(b) = self.bad_queues.get_mut(sel) {
                *b = true;
            }
        }
    }

    fn write_queue_ready(&mut self, v: u32) {
        if self.status & status::DRIVER_OK != 0 {
            return guest_warn(format_args!("virtio-mmio: QueueReady written after DRIVER_OK"));
        }
        let sel = self.queue_sel;
        match self.queues.get_mut(usize::try_from(sel).unwrap_or(usize::MAX)) {
            Some(q) => q.set_ready(v == 1),
            None => guest_warn(format_args!("virtio-mmio: QueueReady for missing queue {sel}")),
        }
    }

    fn write_driver_features(&mut self, v: u32) {
        // §2.2.2: features are negotiated between DRIVER and FEATURES_OK.
        if self.status & status::DRIVER == 0 || self.status & status::FEATURES_OK != 0 {
            return guest_warn(format_args!("virtio-mmio: DriverFeatures written outside negotiation"));
        }
        let v = u64::from(v);
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v << 32),
            _ => {}
        }
    }

    fn notify(&self, v: u32) {
        // Before DRIVER_OK the device has no queues yet: ignore (the event loop would too).
        if self.status & status::DRIVER_OK == 0 {
            return guest_warn(format_args!("virtio-mmio: queue notify before DRIVER_OK ignored"));
        }
        let dev = self.device();
        match dev.queue_evts().get(usize::try_from(v).unwrap_or(usize::MAX)) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    log::error!("virtio-mmio: cannot signal queue {v}: {e}");
                }
            }
            None => guest_warn(format_args!("virtio-mmio: notify for missing queue {v}")),
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            return self.reset();
        }
        // §2.1.1: the driver only ever adds bits (until reset).
        if v & self.status != self.status {
            return guest_warn(format_args!(
                "virtio-mmio: status {v:#x} clears bits of {:#x}; ignored",
                self.status
            ));
        }
        let new = v & !self.status;
        if new & status::FEATURES_OK != 0 && !self.accept_features() {
            // Leave FEATURES_OK clear: the driver reads it back and gives up (§3.1.1 step 6).
            self.status = v & !status::FEATURES_OK;
            return;
        }
        self.status = v;
        if new & status::DRIVER_OK != 0 {
            self.activate();
        }
    }

    fn accept_features(&mut self) -> bool {
        let mut dev = self.device();
        let offered = dev.avail_features();
        let asked = self.driver_features;
        if asked & !offered != 0 || asked & features::VERSION_1 == 0 {
            guest_warn(format_args!(
                "virtio-mmio: driver features {asked:#x} not acceptable (offered {offered:#x})"
            ));
            return false;
        }
        dev.set_acked_features(asked);
        true
    }

    fn activate(&mut self) {
        if self.status & status::FEATURES_OK == 0 {
            self.status |= status::FAILED;
            return guest_warn(format_args!("virtio-mmio: DRIVER_OK without FEATURES_OK"));
        }
        let bad = self.bad_queues.iter().position(|&b| b);
        let result = match bad.map_or_else(|| queues_valid(&self.queues, &self.mem), Err) {
            Err(i) => Err(crate::ActivateError::BadQueue(i)),
            Ok(()) => {
                let queues = self
                    .queues
                    .iter()
                    .filter_map(|q| Queue::try_from(q.state()).ok())
                    .collect();
                self.device().activate(Activated {
                    mem: self.mem.clone(),
                    interrupt: self.interrupt.clone(),
                    queues,
                })
            }
        };
        if let Err(e) = result {
            let mut dev = self.device();
            dev.common_mut().fail(format_args!("activation failed: {e}"));
            drop(dev);
            self.interrupt.signal_config();
        }
    }

    fn reset(&mut self) {
        let mut dev = self.device();
        dev.reset();
        let queues = new_queues(&*dev);
        drop(dev);
        self.bad_queues = vec![false; queues.len()];
        self.queues = queues;
        self.status = 0;
        self.driver_features = 0;
        self.features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.interrupt.clear();
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            data.fill(0);
            let dev = self.device();
            let config = dev.config_space();
            let start = usize::try_from(offset - CONFIG_OFFSET).unwrap_or(usize::MAX);
            match start.checked_add(data.len()).and_then(|end| config.get(start..end)) {
                Some(bytes) => data.copy_from_slice(bytes),
                None => guest_warn(format_args!("virtio-mmio: config read past the end at {offset:#x}")),
            }
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return guest_warn(format_args!("virtio-mmio: {}-byte read at {offset:#x}", data.len()));
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_OFFSET {
            let len = self.device().config_space().len();
            let start = usize::try_from(offset - CONFIG_OFFSET).unwrap_or(usize::MAX);
            if start.checked_add(data.len()).is_none_or(|end| end > len) {
                return guest_warn(format_args!("virtio-mmio: config write past the end at {offset:#x}"));
            }
            self.device().write_config(offset - CONFIG_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return guest_warn(format_args!("virtio-mmio: {}-byte write at {offset:#x}", data.len()));
        };
        if !offset.is_multiple_of(4) {
            return guest_warn(format_args!("virtio-mmio: unaligned write at {offset:#x}"));
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

fn new_queues(dev: &dyn VirtioDevice) -> Vec<Queue> {
    // Max sizes come from device code, not the guest; an invalid one is a hearth bug and gets
    // a queue of the largest valid size below it.
    dev.queue_max_sizes()
        .iter()
        .map(|&max| {
            Queue::new(max)
                .or_else(|_| Queue::new(prev_power_of_two(max)))
                .unwrap_or_default()
        })
        .collect()
}

fn prev_power_of_two(n: u16) -> u16 {
    if n == 0 {
        1
    } else {
        1 << (15 - n.leading_zeros())
    }
}

fn low(v: u64) -> u32 {
    u32::try_from(v & 0xffff_ffff).unwrap_or(0)
}

fn high(v: u64) -> u32 {
    u32::try_from(v >> 32).unwrap_or(0)
}

fn lock(dev: &SharedVirtioDevice) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;

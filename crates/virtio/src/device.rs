//! What a virtio device is to its transport: [`VirtioDevice`], and [`DeviceCommon`], the state
//! every device has (features, queue sizes, kick eventfds, activation) so that a device model
//! only writes what is specific to it: its type, its config space and its queue work.

use std::io;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::queue::pop_chain;
use crate::{features, Memory, VirtioInterrupt};

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the driver did not accept VIRTIO_F_VERSION_1")]
    NotVersion1,
    #[error("queue {0} is not ready or lies outside guest memory")]
    BadQueue(usize),
    #[error("{0}")]
    Device(String),
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activated {
    pub mem: Memory,
    pub interrupt: VirtioInterrupt,
    pub queues: Vec<Queue>,
}

/// State every virtio device has. Devices embed one and hand it out through
/// [`VirtioDevice::common`]; the trait's provided methods do the rest.
pub struct DeviceCommon {
    device_type: u32,
    avail_features: u64,
    acked_features: u64,
    queue_max_sizes: Vec<u16>,
    queue_evts: Vec<EventFd>,
    active: Option<Activated>,
    /// The device found the driver's rings unusable; the transport shows DEVICE_NEEDS_RESET.
    broken: bool,
    /// Times the device changed its configuration space; the transport adds it to the
    /// ConfigGeneration register so a driver reading a multi-word field sees the change.
    config_epoch: u32,
}

impl DeviceCommon {
    /// A device of `device_type` (virtio 1.2 §5) offering `avail_features` (VERSION_1 is always
    /// added) with one queue per entry of `queue_max_sizes`.
    pub fn new(device_type: u32, avail_features: u64, queue_max_sizes: &[u16]) -> io::Result<Self> {
        let queue_evts = queue_max_sizes
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            device_type,
            avail_features: avail_features | features::VERSION_1,
            acked_features: 0,
            queue_max_sizes: queue_max_sizes.to_vec(),
            queue_evts,
            active: None,
            broken: false,
            config_epoch: 0,
        })
    }

    /// The activated state (memory, interrupt, queues), if the driver set DRIVER_OK.
    pub fn active(&mut self) -> Option<&mut Activated> {
        if self.broken {
            return None;
        }
        self.active.as_mut()
    }

    /// The activated state, read-only, even for a broken device (for snapshots).
    pub fn activated(&self) -> Option<&Activated> {
        self.active.as_ref()
    }

    /// Marks the device broken without telling the driver (restoring a snapshot of a device
    /// that was already broken; the driver saw it then).
    pub fn set_broken(&mut self) {
        self.broken = true;
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Marks the device as needing a reset (virtio 1.2 §2.1.2) after the driver broke a ring,
    /// and tells the driver through a configuration interrupt. The device then ignores kicks.
    pub fn fail(&mut self, why: std::fmt::Arguments<'_>) {
        crate::guest_warn(format_args!("device type {}: {why}; needs reset", self.device_type));
        self.broken = true;
        if let Some(a) = &self.active {
            a.interrupt.signal_config();
        }
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The device changed its configuration space (e.g. a drive's capacity): bump the
    /// generation and send a configuration interrupt (virtio 1.2 §2.5.1, §4.2.2).
    pub fn config_changed(&mut self) {
        self.config_epoch = self.config_epoch.wrapping_add(1);
        if let Some(a) = self.active() {
            a.interrupt.signal_config();
        }
    }

    pub fn config_epoch(&self) -> u32 {
        self.config_epoch
    }

    /// Back to the state before the driver found the device (what [`VirtioDevice::reset`]
    /// does by default; devices that override it call this too).
    pub fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        self.broken = false;
    }

    /// The queue loop every device runs on a kick: takes each available chain off queue
    /// `index` (checked, into `descs`, reused between calls), lets `request` serve it and
    /// return how many bytes it wrote for the driver, puts it on the used ring, and raises one
    /// used-buffer interrupt at the end. A broken ring fails the device (DEVICE_NEEDS_RESET).
    pub fn process_queue(
        &mut self,
        index: usize,
        descs: &mut Vec<Descriptor>,
        request: impl FnMut(&Memory, &[Descriptor]) -> u32,
    ) {
        self.process_queue_while(index, descs, || true, request);
    }

    /// [`DeviceCommon::process_queue`] that asks `admit` before taking each chain and stops
    /// (leaving the rest on the ring) when it says no: how a rate-limited device pauses.
    pub fn process_queue_while(
        &mut self,
        index: usize,
        descs: &mut Vec<Descriptor>,
        mut admit: impl FnMut() -> bool,
        mut request: impl FnMut(&Memory, &[Descriptor]) -> u32,
    ) {
        let mut used_any = false;
        while let Some(active) = self.active() {
            if !admit() {
                break;
            }
            let Some(q) = active.queues.get_mut(index) else { break };
            let head = match pop_chain(q, &active.mem, descs) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    self.fail(format_args!("{e}"));
                    break;
                }
            };
            let len = request(&active.mem, descs);
            if let Err(e) = q.add_used(&active.mem, head, len) {
                self.fail(format_args!("cannot add to the used ring: {e}"));
                break;
            }
            used_any = true;
        }
        if used_any {
            if let Some(active) = self.active() {
                active.interrupt.signal_used();
            }
        }
    }
}

/// A virtio device model, driven by a transport ([`crate::MmioTransport`]) for its registers
/// and by the event loop for its queues.
pub trait VirtioDevice: Send {
    fn common(&self) -> &DeviceCommon;
    fn common_mut(&mut self) -> &mut DeviceCommon;

    /// The device-specific configuration space (virtio 1.2 §4.2.2, offset 0x100 on MMIO).
    fn config_space(&self) -> &[u8];

    /// A driver write into the configuration space; most devices have nothing writable.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = data;
        crate::guest_warn(format_args!(
            "device type {}: write to read-only config offset {offset:#x} ignored",
            self.device_type()
        ));
    }

    /// Device-model state a snapshot must carry beyond the transport's (features, queues):
    /// most devices have none, their backend is rebuilt from the VM's configuration.
    fn save_device(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Loads what [`VirtioDevice::save_device`] returned, before the device is re-activated.
    /// The bytes come from a file: check them, and say what is wrong in the error.
    fn restore_device(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} bytes of device state this device does not know",
                state.len()
            ))
        }
    }

    /// Called once a restored device is back in its saved state (and active if it was): a
    /// device whose backend state could not be saved tells the driver here (e.g. vsock's
    /// TRANSPORT_RESET: the host-side connections are gone).
    fn on_restored(&mut self) {}

    /// The driver kicked queue `index`: process what it made available.
    fn process_queue(&mut self, index: usize);

    /// Called at DRIVER_OK with the queues the driver set up. Devices that must check
    /// something first override this and then call [`VirtioDevice::store_activation`].
    fn activate(&mut self, activated: Activated) -> Result<(), ActivateError> {
        self.store_activation(activated)
    }

    /// Checks what every device needs (VERSION_1) and keeps the activated state.
    fn store_activation(&mut self, activated: Activated) -> Result<(), ActivateError> {
        if self.acked_features() & features::VERSION_1 == 0 {
            return Err(ActivateError::NotVersion1);
        }
        self.common_mut().active = Some(activated);
        Ok(())
    }

    /// Device reset (status 0): back to the state before the driver found it.
    fn reset(&mut self) {
        self.common_mut().reset();
    }

    fn device_type(&self) -> u32 {
        self.common().device_type
    }
    fn avail_features(&self) -> u64 {
        self.common().avail_features
    }
    fn acked_features(&self) -> u64 {
        self.common().acked_features
    }
    fn set_acked_features(&mut self, features: u64) {
        self.common_mut().acked_features = features;
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.common().queue_max_sizes
    }
    /// One eventfd per queue, written when the driver kicks it (ioeventfd or the MMIO fallback).
    fn queue_evts(&self) -> &[EventFd] {
        &self.common().queue_evts
    }
}

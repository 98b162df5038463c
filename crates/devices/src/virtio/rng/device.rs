//! The entropy device and its one request queue.

use std::sync::Arc;

use ::virtio::{features, DeviceCommon, VirtioDevice};
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::desc::split::Descriptor;
use vm_memory::Bytes;

use super::metrics::RngMetrics;

const QUEUE_SIZE: u16 = 256;
/// At most this many bytes per request: the driver asks again for more (§5.4.6: the device
/// may fill less than offered), and a guest cannot make one kick cost unbounded host time.
const MAX_PER_REQUEST: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RngError {
    #[error("cannot create the queue eventfd of the entropy device")]
    EventFd(#[source] std::io::Error),
}

pub struct Rng {
    common: DeviceCommon,
    buf: Vec<u8>,
    descs: Vec<Descriptor>,
    metrics: Arc<RngMetrics>,
}

impl Rng {
    pub fn new() -> Result<Self, RngError> {
        Ok(Self {
            common: DeviceCommon::new(VIRTIO_ID_RNG, features::RING_INDIRECT_DESC, &[QUEUE_SIZE])
                .map_err(RngError::EventFd)?,
            buf: Vec::new(),
            descs: Vec::new(),
            metrics: Arc::default(),
        })
    }

    /// This device's counters.
    pub fn metrics(&self) -> Arc<RngMetrics> {
        self.metrics.clone()
    }
}

/// Fills the writable buffers of one chain from getrandom(2) through `buf`; returns the number
/// of bytes written.
fn fill(buf: &mut Vec<u8>, mem: &crate::virtio::Memory, descs: &[Descriptor], m: &RngMetrics) -> u32 {
    let mut total = 0usize;
    for d in descs.iter().filter(|d| d.is_write_only()) {
        let want = usize::try_from(d.len()).unwrap_or(0).min(MAX_PER_REQUEST - total);
        if want == 0 {
            break;
        }
        buf.resize(want, 0);
        if getrandom(buf).is_err() {
            m.host_rng_fails.inc();
            break;
        }
        if mem.write_slice(buf, d.addr()).is_err() {
            break;
        }
        total += want;
    }
    m.entropy_event_count.inc();
    m.entropy_bytes.add(u64::try_from(total).unwrap_or(0));
    u32::try_from(total).unwrap_or(0)
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`, which we own.
        let r = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += usize::try_from(r).unwrap_or(0);
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn common(&self) -> &DeviceCommon {
        &self.common
    }
    fn common_mut(&mut self) -> &mut DeviceCommon {
        &mut self.common
    }
    fn config_space(&self) -> &[u8] {
        &[]
    }
    fn process_queue(&mut self, index: usize) {
        let (buf, m) = (&mut self.buf, &self.metrics);
        self.common
            .process_queue(index, &mut self.descs, |mem, descs| fill(buf, mem, descs, m));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ::virtio::interrupt::CountingTrigger;
    use ::virtio::{Activated, VirtioInterrupt};
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::Queue;
    use vm_memory::GuestAddress;

    use super::*;

    #[test]
    fn fills_writable_buffers_with_random_bytes() {
        let mem = crate::virtio::Memory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let mut rng = Rng::new().unwrap();
        assert_eq!(rng.device_type(), 4);
        rng.set_acked_features(rng.avail_features());
        let vq = MockSplitQueue::new(&mem, 16);
        let q: Queue = vq.create_queue().unwrap();
        let irq = Arc::new(CountingTrigger::default());
        rng.activate(Activated {
            mem: mem.clone(),
            interrupt: VirtioInterrupt::new(irq.clone()),
            queues: vec![q],
        })
        .unwrap();
        let flags = u16::try_from(VRING_DESC_F_WRITE).unwrap();
        vq.add_desc_chains(&[RawDescriptor::from(Descriptor::new(0x8000, 64, flags, 0))], 0)
            .unwrap();
        // A device-readable buffer gets nothing.
        vq.add_desc_chains(&[RawDescriptor::from(Descriptor::new(0x9000, 64, 0, 0))], 1)
            .unwrap();
        rng.process_queue(0);
        assert_eq!(vq.used().idx().load(), 2);
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 64);
        assert_eq!(vq.used().ring().ref_at(1).unwrap().load().len(), 0);
        let mut b = [0u8; 64];
        mem.read_slice(&mut b, GuestAddress(0x8000)).unwrap();
        assert!(b.iter().any(|&x| x != b[0]), "not constant");
        assert_eq!(irq.count(), 1);
        assert_eq!(rng.metrics().entropy_bytes.get(), 64);
        assert_eq!(rng.metrics().entropy_event_count.get(), 2);
    }
}

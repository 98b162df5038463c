//! The virtio-blk device: what the driver sees (features, config space) and the image behind it.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use ::virtio::{features, DeviceCommon, VirtioDevice};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_WRITE_ZEROES,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::desc::split::Descriptor;

use crate::rate_limiter::{Clock, Limits, RateLimiter};

use super::direct::AlignedBuf;
use super::discard::{Unsupported, ALIGNMENT_SECTORS, MAX_SECTORS, MAX_SEGMENTS};
use super::metrics::BlockMetrics;

pub const SECTOR_SIZE: u64 = 512;
/// Descriptors in the one request queue.
pub(crate) const QUEUE_SIZE: u16 = 256;
/// Length of the GET_ID answer (virtio 1.2 §5.2.6: VIRTIO_BLK_ID_BYTES).
pub(crate) const ID_BYTES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot read the size of drive '{id}'")]
    Size {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("drive '{id}': the image's file system does not take 512-byte O_DIRECT reads (drop ',direct')")]
    Direct {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the rate limiter timerfd of drive '{id}'")]
    Timer {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the queue eventfd of drive '{id}'")]
    EventFd {
        id: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct Block {
    common: DeviceCommon,
    disk: Disk,
    config: Vec<u8>,
    /// Reused for every request's descriptor list.
    descs: Vec<Descriptor>,
    /// Set by [`Block::set_rate_limit`]; while throttled the queue is left alone until
    /// [`Block::rate_limit_timer_fired`].
    limiter: Option<RateLimiter>,
}

/// The backend the requests run against (see `handler`).
pub(crate) struct Disk {
    pub(crate) image: File,
    pub(crate) read_only: bool,
    /// Image size in bytes, rounded down to whole sectors.
    pub(crate) size: u64,
    pub(crate) id: [u8; ID_BYTES],
    /// fallocate modes the image's file system refused (see `discard`).
    pub(crate) unsupported: Unsupported,
    pub(crate) metrics: Arc<BlockMetrics>,
    /// The bounce buffer of a drive opened with O_DIRECT (`None`: page-cached I/O).
    pub(crate) bounce: Option<AlignedBuf>,
}

impl Block {
    /// A block device on `image` (opened read-only when `read_only`), answering GET_ID with `id`.
    pub fn new(image: File, read_only: bool, id: &str) -> Result<Self, BlockError> {
        Self::with_direct(image, read_only, false, id)
    }

    /// As [`Block::new`]; with `direct`, `image` was opened with O_DIRECT and I/O goes through
    /// an aligned bounce buffer (probed here: a file system without 512-byte direct I/O is an
    /// error, not a guest-visible I/O failure later).
    pub fn with_direct(image: File, read_only: bool, direct: bool, id: &str) -> Result<Self, BlockError> {
        if direct {
            super::direct::probe(&image).map_err(|source| BlockError::Direct {
                id: id.to_string(),
                source,
            })?;
        }
        let size = image
            .metadata()
            .map_err(|source| BlockError::Size {
                id: id.to_string(),
                source,
            })?
            .len();
        let size = size - size % SECTOR_SIZE;
        let mut avail = bit(VIRTIO_BLK_F_FLUSH)
            | bit(VIRTIO_BLK_F_SEG_MAX)
            | bit(VIRTIO_BLK_F_BLK_SIZE)
            | features::RING_INDIRECT_DESC;
        if read_only {
            avail |= bit(VIRTIO_BLK_F_RO);
        } else {
            avail |= bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
        }
        let common =
            DeviceCommon::new(VIRTIO_ID_BLOCK, avail, &[QUEUE_SIZE]).map_err(|source| BlockError::EventFd {
                id: id.to_string(),
                source,
            })?;
        let mut id_bytes = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Self {
            common,
            disk: Disk {
                image,
                read_only,
                size,
                id: id_bytes,
                unsupported: Unsupported::default(),
                metrics: Arc::default(),
                bounce: direct.then(AlignedBuf::new),
            },
            config: config_space(size / SECTOR_SIZE),
            descs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            limiter: None,
        })
    }

    /// Limits the drive to `limits` (bytes and requests a second, with bursts).
    pub fn set_rate_limit(&mut self, limits: Limits, clock: Box<dyn Clock>) -> Result<(), BlockError> {
        let limiter = RateLimiter::new(limits, clock).map_err(|source| BlockError::Timer {
            id: self.id_string(),
            source,
        })?;
        self.limiter = Some(limiter);
        Ok(())
    }

    /// Changes the limits of a drive that has a limiter (hearth gives every drive one at build,
    /// so this works after boot); `false` if it has none.
    pub fn update_rate_limit(&mut self, limits: Limits) -> bool {
        match &mut self.limiter {
            Some(l) => {
                l.set_limits(limits);
                true
            }
            None => false,
        }
    }

    /// Swaps the image behind the drive (Firecracker's `PATCH /drives` with `path_on_host`):
    /// same read-only and O_DIRECT settings, the new size in the config space, and a
    /// configuration interrupt so the guest's driver reads the new capacity.
    pub fn replace_image(&mut self, image: File) -> Result<u64, BlockError> {
        let id = self.id_string();
        if self.disk.bounce.is_some() {
            super::direct::probe(&image).map_err(|source| BlockError::Direct { id: id.clone(), source })?;
        }
        let size = image
            .metadata()
            .map_err(|source| BlockError::Size { id, source })?
            .len();
        let size = size - size % SECTOR_SIZE;
        self.disk.image = image;
        self.disk.size = size;
        self.disk.unsupported = Unsupported::default();
        self.config[0..8].copy_from_slice(&(size / SECTOR_SIZE).to_le_bytes());
        self.common.config_changed();
        Ok(size)
    }

    /// The timerfd the event loop must watch (then call [`Block::rate_limit_timer_fired`]).
    pub fn rate_limit_fd(&self) -> Option<RawFd> {
        self.limiter.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// The rate limiter's timer fired: take requests again.
    pub fn rate_limit_timer_fired(&mut self) {
        if let Some(l) = &mut self.limiter {
            l.timer_fired();
        }
        self.process_queue(0);
    }

    fn id_string(&self) -> String {
        let end = self.disk.id.iter().position(|&b| b == 0).unwrap_or(ID_BYTES);
        String::from_utf8_lossy(&self.disk.id[..end]).into_owned()
    }

    #[cfg(test)]
    pub(crate) fn disk_mut(&mut self) -> &mut Disk {
        &mut self.disk
    }

    /// This drive's counters.
    pub fn metrics(&self) -> Arc<BlockMetrics> {
        self.disk.metrics.clone()
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.disk.size / SECTOR_SIZE
    }
}

/// What a request costs the bandwidth bucket: its data buffers (not header or status).
fn data_bytes(descs: &[Descriptor]) -> u64 {
    let data = descs.get(1..descs.len().saturating_sub(1)).unwrap_or(&[]);
    data.iter().map(|d| u64::from(d.len())).sum()
}

fn bit(f: u32) -> u64 {
    1 << f
}

/// struct virtio_blk_config (virtio 1.2 §5.2.4) up to `write_zeroes_may_unmap`, little-endian.
/// The discard/write-zeroes limits are there on read-only drives too (the layout is fixed) but
/// mean nothing without the features.
fn config_space(sectors: u64) -> Vec<u8> {
    let mut c = vec![0u8; 60];
    let mut put = |at: usize, v: u32| c[at..at + 4].copy_from_slice(&v.to_le_bytes());
    // seg_max: a request's data descriptors, leaving room for its header and status.
    put(12, u32::from(QUEUE_SIZE) - 2);
    put(20, u32::try_from(SECTOR_SIZE).unwrap_or(512));
    put(36, MAX_SECTORS); // max_discard_sectors
    put(40, MAX_SEGMENTS); // max_discard_seg
    put(44, ALIGNMENT_SECTORS); // discard_sector_alignment
    put(48, MAX_SECTORS); // max_write_zeroes_sectors
    put(52, MAX_SEGMENTS); // max_write_zeroes_seg
    c[0..8].copy_from_slice(&sectors.to_le_bytes());
    c[56] = 1; // write_zeroes_may_unmap
    c
}

impl VirtioDevice for Block {
    fn common(&self) -> &DeviceCommon {
        &self.common
    }
    fn common_mut(&mut self) -> &mut DeviceCommon {
        &mut self.common
    }
    fn config_space(&self) -> &[u8] {
        &self.config
    }
    fn process_queue(&mut self, index: usize) {
        let disk = &mut self.disk;
        disk.metrics.queue_event_count.inc();
        let Some(limiter) = &mut self.limiter else {
            self.common
                .process_queue(index, &mut self.descs, |mem, descs| disk.execute(mem, descs));
            return;
        };
        let limiter = std::cell::RefCell::new(limiter);
        let metrics = disk.metrics.clone();
        self.common.process_queue_while(
            index,
            &mut self.descs,
            || {
                let admitted = limiter.borrow_mut().admit();
                if !admitted {
                    metrics.rate_limiter_throttled_events.inc();
                }
                admitted
            },
            |mem, descs| {
                limiter.borrow_mut().charge(data_bytes(descs));
                disk.execute(mem, descs)
            },
        );
    }
}

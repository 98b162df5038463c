//! DISCARD and WRITE_ZEROES requests (virtio 1.2 §5.2.6): a list of 16-byte segments
//! (le64 sector, le32 num_sectors, le32 flags) in the request's device-readable buffers, each
//! turned into a hole or a zeroed range of the image file.
//!
//! Host side: discard punches a hole (`fallocate(PUNCH_HOLE | KEEP_SIZE)`); write-zeroes
//! punches a hole when the driver allows unmapping and zeroes the range in place
//! (`FALLOC_FL_ZERO_RANGE`) otherwise. A host file system without these falls back: discard,
//! only a hint, then does nothing; write-zeroes writes zero bytes. What the file system lacks
//! is remembered, so an unsupported call is tried once per drive, not once per request.

use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::Bytes;

use super::device::{Disk, SECTOR_SIZE};
use crate::virtio::Memory;

/// Segments one request may carry (config max_discard_seg / max_write_zeroes_seg).
pub(crate) const MAX_SEGMENTS: u32 = 32;
/// Sectors one segment may cover (config max_discard_sectors / max_write_zeroes_sectors): 1 GiB.
pub(crate) const MAX_SECTORS: u32 = 1 << 21;
/// Discard granularity the driver is told (config discard_sector_alignment): 4 KiB, the usual
/// host file system block, so that a hole really frees blocks.
pub(crate) const ALIGNMENT_SECTORS: u32 = 8;
const SEGMENT_LEN: usize = 16;

/// Which fallocate modes the image's file system has refused (EOPNOTSUPP), so not tried again.
#[derive(Default)]
pub(crate) struct Unsupported {
    pub(crate) punch_hole: bool,
    pub(crate) zero_range: bool,
}

/// One segment, checked against the disk: a byte range inside it.
struct Segment {
    start: u64,
    len: u64,
    unmap: bool,
}

impl Disk {
    /// Runs a DISCARD or WRITE_ZEROES request whose segments are in `data` (device-readable).
    pub(crate) fn discard_or_zero(&mut self, mem: &Memory, data: &[Descriptor], kind: u32) -> Result<(), u32> {
        if self.read_only {
            return Err(VIRTIO_BLK_S_UNSUPP);
        }
        let raw = read_segments(mem, data)?;
        let discard = kind == VIRTIO_BLK_T_DISCARD;
        // Check every segment before touching the image, so a bad one changes nothing.
        let segs = raw
            .chunks_exact(SEGMENT_LEN)
            .map(|s| self.segment(s, discard))
            .collect::<Result<Vec<_>, _>>()?;
        for s in segs {
            let r = if discard {
                self.punch_hole(s.start, s.len).map(|_| ())
            } else {
                self.write_zeroes(s.start, s.len, s.unmap)
            };
            r.map_err(|e| self.io_error(if discard { "discard" } else { "write-zeroes" }, &e))?;
        }
        Ok(())
    }

    fn segment(&self, s: &[u8], discard: bool) -> Result<Segment, u32> {
        let field = |r: std::ops::Range<usize>| s.get(r).ok_or(VIRTIO_BLK_S_IOERR);
        let sector = u64::from_le_bytes(field(0..8)?.try_into().map_err(|_| VIRTIO_BLK_S_IOERR)?);
        let sectors = u32::from_le_bytes(field(8..12)?.try_into().map_err(|_| VIRTIO_BLK_S_IOERR)?);
        let flags = u32::from_le_bytes(field(12..16)?.try_into().map_err(|_| VIRTIO_BLK_S_IOERR)?);
        // §5.2.6.2: reserved flag bits, and unmap on a discard, are UNSUPP.
        if flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0 || (discard && flags != 0) || sectors > MAX_SECTORS {
            return Err(VIRTIO_BLK_S_UNSUPP);
        }
        let start = sector.checked_mul(SECTOR_SIZE).ok_or(VIRTIO_BLK_S_IOERR)?;
        let len = u64::from(sectors) * SECTOR_SIZE;
        if start.checked_add(len).is_none_or(|end| end > self.size) {
            ::virtio::guest_warn(format_args!(
                "virtio-blk: discard/write-zeroes at sector {sector} for {sectors} sectors is past the end"
            ));
            return Err(VIRTIO_BLK_S_IOERR);
        }
        Ok(Segment {
            start,
            len,
            unmap: flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0,
        })
    }

    /// Returns whether a hole was punched (false: the file system cannot, nothing was done).
    fn punch_hole(&mut self, start: u64, len: u64) -> std::io::Result<bool> {
        if self.unsupported.punch_hole {
            return Ok(false);
        }
        let done = self.fallocate(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, start, len)?;
        self.unsupported.punch_hole = !done;
        Ok(done)
    }

    fn write_zeroes(&mut self, start: u64, len: u64, unmap: bool) -> std::io::Result<()> {
        if unmap && self.punch_hole(start, len)? {
            return Ok(());
        }
        if !self.unsupported.zero_range {
            if self.fallocate(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE, start, len)? {
                return Ok(());
            }
            self.unsupported.zero_range = true;
        }
        write_zero_bytes(&self.image, start, len)
    }

    /// fallocate(2) on the image; `Ok(false)` when the file system does not support `mode`.
    fn fallocate(&self, mode: libc::c_int, start: u64, len: u64) -> std::io::Result<bool> {
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(start), libc::off_t::try_from(len)) else {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        };
        if len == 0 {
            return Ok(true);
        }
        // SAFETY: fallocate only reads its integer arguments; the fd is the open image file.
        let r = unsafe { libc::fallocate(self.image.as_raw_fd(), mode, off, len) };
        if r == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::ENOSYS) => Ok(false),
            _ => Err(e),
        }
    }
}

/// The request's segment list, copied out of its buffers (at most [`MAX_SEGMENTS`]).
fn read_segments(mem: &Memory, data: &[Descriptor]) -> Result<Vec<u8>, u32> {
    let total: u64 = data.iter().map(|d| u64::from(d.len())).sum();
    let max = u64::from(MAX_SEGMENTS) * SEGMENT_LEN as u64;
    if total > max {
        return Err(VIRTIO_BLK_S_UNSUPP);
    }
    if total == 0 || !total.is_multiple_of(SEGMENT_LEN as u64) {
        ::virtio::guest_warn(format_args!(
            "virtio-blk: discard/write-zeroes data of {total} bytes is not whole segments"
        ));
        return Err(VIRTIO_BLK_S_IOERR);
    }
    let mut raw = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for d in data {
        let mut buf = vec![0u8; usize::try_from(d.len()).unwrap_or(0)];
        mem.read_slice(&mut buf, d.addr()).map_err(|_| VIRTIO_BLK_S_IOERR)?;
        raw.extend_from_slice(&buf);
    }
    Ok(raw)
}

/// Writes zeros from an aligned buffer (the image may be open with O_DIRECT: see `direct`).
fn write_zero_bytes(image: &std::fs::File, start: u64, len: u64) -> std::io::Result<()> {
    const CHUNK: usize = super::direct::CHUNK;
    let mut buf = super::direct::AlignedBuf::new();
    let zeros = buf.as_mut_slice();
    let mut off = 0;
    while off < len {
        let n = usize::try_from(len - off).map_or(CHUNK, |left| left.min(CHUNK));
        image.write_all_at(&zeros[..n], start + off)?;
        off += n as u64;
    }
    Ok(())
}

//! Executing virtio-blk requests (virtio 1.2 §5.2.6): a 16-byte header the device reads
//! (type, reserved, sector), data buffers, and a one-byte status the device writes last.
//!
//! Requests run synchronously on the event loop thread against the image file. Anything a
//! driver gets wrong about one request (short header, no status byte, a range past the end of
//! the disk) fails that request; a broken ring (see `virtio::queue`) fails the device.

use std::io::{Seek, SeekFrom};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress};

use super::device::{Disk, ID_BYTES, SECTOR_SIZE};
use crate::virtio::Memory;

const HEADER_LEN: u32 = 16;

/// Where a request's parts are in guest memory.
struct Request {
    kind: u32,
    sector: u64,
    /// Data descriptors (device-readable for OUT, device-writable for IN/GET_ID).
    data: std::ops::Range<usize>,
    status: GuestAddress,
}

impl Disk {
    /// Executes one request; returns the number of bytes written into the driver's buffers.
    pub(crate) fn execute(&mut self, mem: &Memory, descs: &[Descriptor]) -> u32 {
        let Some(req) = parse(mem, descs) else {
            ::virtio::guest_warn(format_args!("virtio-blk: malformed request ignored"));
            self.metrics.invalid_reqs_count.inc();
            return 0;
        };
        let (status, written) = match self.run(mem, descs, &req) {
            Ok(written) => (VIRTIO_BLK_S_OK, written),
            Err(status) => {
                self.metrics.execute_fails.inc();
                (status, 0)
            }
        };
        // The status byte is in guest memory (checked by pop_chain); a failure here is not
        // possible short of a hearth bug, and the driver would then see a stale status.
        let _ = mem.write_obj(u8::try_from(status).unwrap_or(1), req.status);
        written.saturating_add(1)
    }

    fn run(&mut self, mem: &Memory, descs: &[Descriptor], req: &Request) -> Result<u32, u32> {
        let data = &descs[req.data.clone()];
        match req.kind {
            VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => {
                let len: u64 = data.iter().map(|d| u64::from(d.len())).sum();
                let start = req.sector.checked_mul(SECTOR_SIZE).ok_or(VIRTIO_BLK_S_IOERR)?;
                if start.checked_add(len).is_none_or(|end| end > self.size) {
                    ::virtio::guest_warn(format_args!(
                        "virtio-blk: request at sector {} for {len} bytes is past the end ({} bytes)",
                        req.sector, self.size
                    ));
                    return Err(VIRTIO_BLK_S_IOERR);
                }
                if req.kind == VIRTIO_BLK_T_OUT && self.read_only {
                    return Err(VIRTIO_BLK_S_IOERR);
                }
                let read = req.kind == VIRTIO_BLK_T_IN;
                match &mut self.bounce {
                    Some(bounce) => super::direct::transfer(&self.image, bounce, mem, data, start, len, read),
                    None => self.transfer(mem, data, start, read),
                }
                .map_err(|e| self.io_error("read/write", &e))?;
                let m = &self.metrics;
                if req.kind == VIRTIO_BLK_T_IN {
                    m.read_count.inc();
                    m.read_bytes.add(len);
                } else {
                    m.write_count.inc();
                    m.write_bytes.add(len);
                }
                Ok(if req.kind == VIRTIO_BLK_T_IN {
                    u32::try_from(len).unwrap_or(u32::MAX)
                } else {
                    0
                })
            }
            VIRTIO_BLK_T_FLUSH => {
                if !self.read_only {
                    self.image.sync_data().map_err(|e| self.io_error("flush", &e))?;
                }
                self.metrics.flush_count.inc();
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                let mut left = &self.id[..];
                let mut written = 0u32;
                for d in data {
                    let n = left.len().min(usize::try_from(d.len()).unwrap_or(0));
                    mem.write_slice(&left[..n], d.addr()).map_err(|_| VIRTIO_BLK_S_IOERR)?;
                    left = &left[n..];
                    written += u32::try_from(n).unwrap_or(0);
                }
                debug_assert!(written as usize <= ID_BYTES);
                Ok(written)
            }
            VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
                self.discard_or_zero(mem, data, req.kind)?;
                Ok(0)
            }
            _ => Err(VIRTIO_BLK_S_UNSUPP),
        }
    }

    fn transfer(&mut self, mem: &Memory, data: &[Descriptor], start: u64, read: bool) -> std::io::Result<()> {
        self.image.seek(SeekFrom::Start(start))?;
        for d in data {
            let len = usize::try_from(d.len()).unwrap_or(0);
            let r = if read {
                mem.read_exact_volatile_from(d.addr(), &mut self.image, len)
            } else {
                mem.write_all_volatile_to(d.addr(), &mut self.image, len)
            };
            r.map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    pub(crate) fn io_error(&self, what: &str, e: &std::io::Error) -> u32 {
        ::virtio::guest_warn(format_args!("virtio-blk: {what} on the image failed: {e}"));
        VIRTIO_BLK_S_IOERR
    }
}

/// Splits a chain into header, data and status (virtio 1.2 §5.2.6). The header must sit in the
/// first descriptor and the status must be the last byte of the last one, as every driver lays
/// them out; anything else is refused rather than guessed at.
fn parse(mem: &Memory, descs: &[Descriptor]) -> Option<Request> {
    let first = descs.first()?;
    let last = descs.last()?;
    if first.is_write_only() || first.len() < HEADER_LEN || !last.is_write_only() || last.len() == 0 {
        return None;
    }
    let kind: u32 = mem.read_obj(first.addr()).ok()?;
    let sector: u64 = mem.read_obj(first.addr().checked_add(8)?).ok()?;
    let status = last.addr().checked_add(u64::from(last.len() - 1))?;
    let kind = u32::from_le(kind);
    let sector = u64::from_le(sector);
    // Data is everything between header and status; a status descriptor longer than one byte
    // would carry data too, which no driver does.
    if last.len() != 1 {
        return None;
    }
    // OUT, DISCARD and WRITE_ZEROES data must be device-readable, IN and GET_ID data
    // device-writable (pop_chain already checked that readable descriptors come first).
    let data = 1..descs.len() - 1;
    let want_write = !matches!(
        kind,
        VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES
    );
    if descs[data.clone()].iter().any(|d| d.is_write_only() != want_write) {
        return None;
    }
    Some(Request {
        kind,
        sector,
        data,
        status,
    })
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;

//! Frames in and out of descriptor chains (virtio 1.2 §5.1.6): without offloads every buffer
//! starts with a 12-byte `virtio_net_hdr_v1`; the device ignores it on transmit and writes a
//! zeroed one (num_buffers = 1) on receive.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes};

use crate::virtio::Memory;

/// sizeof(struct virtio_net_hdr_v1).
pub(crate) const HDR_LEN: usize = 12;
/// The largest frame moved either way: 64 KiB is more than any MTU a guest without offloads
/// can use, and bounds what one chain costs the host.
pub(crate) const MAX_FRAME: usize = 65_536;

/// Gathers a transmit chain's device-readable buffers into `buf` and returns the frame behind
/// the header; `None` when the chain is shorter than the header, longer than a frame, or has
/// device-writable buffers.
pub(crate) fn read_tx_frame<'a>(mem: &Memory, descs: &[Descriptor], buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    buf.clear();
    for d in descs {
        if d.is_write_only() {
            return None;
        }
        let len = usize::try_from(d.len()).ok()?;
        let start = buf.len();
        if start + len > HDR_LEN + MAX_FRAME {
            return None;
        }
        buf.resize(start + len, 0);
        mem.read_slice(&mut buf[start..], d.addr()).ok()?;
    }
    if buf.len() < HDR_LEN {
        return None;
    }
    Some(&buf[HDR_LEN..])
}

/// Writes a zeroed header (num_buffers = 1) and `frame` into a receive chain's device-writable
/// buffers; returns the bytes written, or `None` when they do not fit or the chain has
/// device-readable buffers.
pub(crate) fn write_rx_frame(mem: &Memory, descs: &[Descriptor], frame: &[u8]) -> Option<u32> {
    if descs.iter().any(|d| !d.is_write_only()) {
        return None;
    }
    let room: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
    let total = HDR_LEN + frame.len();
    if room < u64::try_from(total).ok()? {
        return None;
    }
    let mut hdr = [0u8; HDR_LEN];
    hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
    let mut parts = [&hdr[..], frame];
    let mut part = 0;
    for d in descs {
        let mut addr = d.addr();
        let mut left = usize::try_from(d.len()).ok()?;
        while left > 0 && part < parts.len() {
            let n = left.min(parts[part].len());
            mem.write_slice(&parts[part][..n], addr).ok()?;
            addr = addr.checked_add(u64::try_from(n).ok()?)?;
            left -= n;
            parts[part] = &parts[part][n..];
            if parts[part].is_empty() {
                part += 1;
            }
        }
        if part == parts.len() {
            break;
        }
    }
    u32::try_from(total).ok()
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;

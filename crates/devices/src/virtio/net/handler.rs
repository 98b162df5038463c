//! Packets in and out of descriptor chains (virtio 1.2 §5.1.6): every packet is a 12-byte
//! `virtio_net_hdr_v1` and the frame behind it. These functions move whole packets; what the
//! header says is the device's business (see `offload`).

use virtio_queue::desc::split::Descriptor;
use vm_memory::Bytes;

use crate::virtio::Memory;

/// sizeof(struct virtio_net_hdr_v1).
pub(crate) const HDR_LEN: usize = 12;
/// The largest frame moved either way: a 64 KiB TSO segment (IP packets are at most 65535
/// bytes) with its Ethernet and VLAN headers, which bounds what one chain costs the host.
pub(crate) const MAX_FRAME: usize = 65_535 + 18;

/// Gathers a transmit chain's device-readable buffers into `buf` and returns the packet
/// (header and frame); `None` when the chain is shorter than the header, longer than a frame,
/// or has device-writable buffers.
pub(crate) fn read_tx_packet<'a>(mem: &Memory, descs: &[Descriptor], buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
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
    Some(&buf[..])
}

/// Writes `packet` (header and frame) into a receive chain's device-writable buffers; returns
/// the bytes written, or `None` when they do not fit or the chain has device-readable buffers.
pub(crate) fn write_rx_packet(mem: &Memory, descs: &[Descriptor], packet: &[u8]) -> Option<u32> {
    if descs.iter().any(|d| !d.is_write_only()) {
        return None;
    }
    let room: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
    let total = packet.len();
    if room < u64::try_from(total).ok()? {
        return None;
    }
    let mut rest = packet;
    for d in descs {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(usize::try_from(d.len()).ok()?);
        mem.write_slice(&rest[..n], d.addr()).ok()?;
        rest = &rest[n..];
    }
    u32::try_from(total).ok()
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;

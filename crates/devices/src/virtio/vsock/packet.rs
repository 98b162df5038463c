//! The vsock packet header (`struct virtio_vsock_hdr`, virtio 1.2 §5.10.6) and moving packets
//! in and out of descriptor chains, checked: a header cut short, a length past what the chain
//! holds or past [`MAX_PAYLOAD`] is a malformed packet, never a read outside the chain.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress};

use crate::virtio::Memory;

/// sizeof(struct virtio_vsock_hdr): 44 bytes, little-endian, packed.
pub const HDR_LEN: usize = 44;
/// The largest payload a packet may carry either way. Linux sends at most 64 KiB per packet
/// (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE); this also bounds what one chain costs the host.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The host's CID (VMADDR_CID_HOST).
pub const HOST_CID: u64 = 2;
/// VIRTIO_VSOCK_TYPE_STREAM, the only socket type hearth offers (no SEQPACKET feature).
pub const TYPE_STREAM: u16 = 1;

/// Packet operations (§5.10.6).
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// OP_SHUTDOWN flags: the sender will receive (RCV) / send (SEND) no more data.
pub mod shutdown {
    pub const RCV: u32 = 1;
    pub const SEND: u32 = 2;
    pub const BOTH: u32 = RCV | SEND;
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

fn le_u32(b: &[u8; HDR_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Header {
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        let u64_at = |at: usize| u64::from(le_u32(b, at)) | (u64::from(le_u32(b, at + 4)) << 32);
        let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: le_u32(b, 16),
            dst_port: le_u32(b, 20),
            len: le_u32(b, 24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: le_u32(b, 32),
            buf_alloc: le_u32(b, 36),
            fwd_cnt: le_u32(b, 40),
        }
    }

    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Why a transmit chain is not a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum BadPacket {
    /// Fewer device-readable bytes than a header, or a device-writable buffer.
    Short,
    /// `len` is more than [`MAX_PAYLOAD`] or than the chain holds after the header.
    Len(u32),
    /// Guest memory could not be read (the chain was checked, so this is a race or a bug).
    Memory,
}

/// Reads a transmit chain: the header, then its `len` payload bytes into `payload` (cleared
/// first, reused between packets).
pub fn read_packet(mem: &Memory, descs: &[Descriptor], payload: &mut Vec<u8>) -> Result<Header, BadPacket> {
    payload.clear();
    if descs.iter().any(|d| d.is_write_only()) {
        return Err(BadPacket::Short);
    }
    let total: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
    let mut hdr = [0u8; HDR_LEN];
    if total < HDR_LEN as u64 {
        return Err(BadPacket::Short);
    }
    gather(mem, descs, 0, &mut hdr)?;
    let h = Header::from_bytes(&hdr);
    let len = usize::try_from(h.len).map_err(|_| BadPacket::Len(h.len))?;
    if len > MAX_PAYLOAD || u64::from(h.len) > total - HDR_LEN as u64 {
        return Err(BadPacket::Len(h.len));
    }
    payload.resize(len, 0);
    gather(mem, descs, HDR_LEN, payload)?;
    Ok(h)
}

/// Copies `out.len()` bytes starting `skip` bytes into the chain's buffers.
fn gather(mem: &Memory, descs: &[Descriptor], mut skip: usize, out: &mut [u8]) -> Result<(), BadPacket> {
    let mut done = 0;
    for d in descs {
        if done == out.len() {
            break;
        }
        let dlen = usize::try_from(d.len()).map_err(|_| BadPacket::Memory)?;
        if skip >= dlen {
            skip -= dlen;
            continue;
        }
        let n = (dlen - skip).min(out.len() - done);
        let addr = offset(d.addr(), skip).ok_or(BadPacket::Memory)?;
        mem.read_slice(&mut out[done..done + n], addr)
            .map_err(|_| BadPacket::Memory)?;
        done += n;
        skip = 0;
    }
    if done == out.len() {
        Ok(())
    } else {
        Err(BadPacket::Short)
    }
}

fn offset(addr: GuestAddress, by: usize) -> Option<GuestAddress> {
    addr.checked_add(u64::try_from(by).ok()?)
}

/// The payload room of a receive chain (its device-writable bytes after the header), or
/// `None` when it cannot take a header or has device-readable buffers.
pub fn rx_capacity(descs: &[Descriptor]) -> Option<usize> {
    if descs.is_empty() || descs.iter().any(|d| !d.is_write_only()) {
        return None;
    }
    let total: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
    let room = total.checked_sub(HDR_LEN as u64)?;
    Some(usize::try_from(room).unwrap_or(usize::MAX).min(MAX_PAYLOAD))
}

/// Writes `hdr` (with `len` set to the payload's length) and `payload` into a receive chain;
/// returns the bytes written, `None` if they do not fit (see [`rx_capacity`]).
pub fn write_packet(mem: &Memory, descs: &[Descriptor], hdr: &Header, payload: &[u8]) -> Option<u32> {
    if rx_capacity(descs)? < payload.len() {
        return None;
    }
    let mut h = *hdr;
    h.len = u32::try_from(payload.len()).ok()?;
    let hb = h.to_bytes();
    let mut parts = [&hb[..], payload];
    let mut part = 0;
    for d in descs {
        let mut addr = d.addr();
        let mut left = usize::try_from(d.len()).ok()?;
        while left > 0 && part < parts.len() {
            let n = left.min(parts[part].len());
            mem.write_slice(&parts[part][..n], addr).ok()?;
            addr = offset(addr, n)?;
            left -= n;
            parts[part] = &parts[part][n..];
            if parts[part].is_empty() {
                part += 1;
            }
        }
        while part < parts.len() && parts[part].is_empty() {
            part += 1;
        }
        if part == parts.len() {
            break;
        }
    }
    u32::try_from(HDR_LEN + payload.len()).ok()
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;

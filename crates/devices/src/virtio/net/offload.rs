//! Checksum and segmentation offloads (virtio 1.2 §5.1.6.2): which virtio-net features a
//! backend that passes `virtio_net_hdr` through (a tap with IFF_VNET_HDR) can honour, the tap's
//! TUNSETOFFLOAD flags for what the driver acked, and the checks on the headers that cross.
//!
//! Directions, as the spec names them: "host" features (CSUM, HOST_TSO*) let the guest hand over
//! frames with a partial checksum or one 64 KiB TCP segment for the host to finish; "guest"
//! features (GUEST_CSUM, GUEST_TSO*) let the host deliver such frames. The tap takes the former
//! whenever it has a vnet header; the latter only after TUNSETOFFLOAD says the reader accepts
//! them (otherwise the host stack checksums and segments before the tap).

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
};

use super::handler::HDR_LEN;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// What a backend taking vnet headers can always do: finish checksums and segment TCP.
pub(crate) const HOST_OFFLOADS: u64 =
    bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6) | bit(VIRTIO_NET_F_HOST_ECN);
/// What it can deliver once TUNSETOFFLOAD accepted the matching flags.
pub(crate) const GUEST_OFFLOADS: u64 = bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN);
/// Every offload feature bit this device knows.
pub(crate) const ALL: u64 = HOST_OFFLOADS | GUEST_OFFLOADS;

// linux/if_tun.h
pub(crate) const TUN_F_CSUM: u32 = 0x01;
pub(crate) const TUN_F_TSO4: u32 = 0x02;
pub(crate) const TUN_F_TSO6: u32 = 0x04;
pub(crate) const TUN_F_TSO_ECN: u32 = 0x08;

const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

/// The TUNSETOFFLOAD flags for the features the driver acked: what the guest accepts on receive.
pub(crate) fn tun_flags(acked: u64) -> u32 {
    let has = |b: u32| acked & bit(b) != 0;
    // The kernel ignores TSO flags without TUN_F_CSUM, and so does the spec (GUEST_TSO* needs
    // GUEST_CSUM).
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut f = TUN_F_CSUM;
    if has(VIRTIO_NET_F_GUEST_TSO4) {
        f |= TUN_F_TSO4;
    }
    if has(VIRTIO_NET_F_GUEST_TSO6) {
        f |= TUN_F_TSO6;
    }
    if has(VIRTIO_NET_F_GUEST_ECN) && f & (TUN_F_TSO4 | TUN_F_TSO6) != 0 {
        f |= TUN_F_TSO_ECN;
    }
    f
}

fn u16_at(h: &[u8; HDR_LEN], at: usize) -> usize {
    usize::from(u16::from_le_bytes([h[at], h[at + 1]]))
}

/// Checks a transmit header from the driver against the features it acked and the length of
/// the frame behind it; the reason when the frame must be dropped. The kernel checks again,
/// but a frame hearth passes on should be one the spec allows.
pub(crate) fn check_tx_header(h: &[u8; HDR_LEN], frame_len: usize, acked: u64) -> Result<(), &'static str> {
    let has = |b: u32| acked & bit(b) != 0;
    let (flags, gso_type) = (h[0], h[1]);
    let (hdr_len, gso_size) = (u16_at(h, 2), u16_at(h, 4));
    let (csum_start, csum_offset) = (u16_at(h, 6), u16_at(h, 8));
    if flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
        return Err("unknown header flags");
    }
    if flags & F_NEEDS_CSUM != 0 {
        if !has(VIRTIO_NET_F_CSUM) {
            return Err("partial checksum without VIRTIO_NET_F_CSUM");
        }
        if csum_start + csum_offset + 2 > frame_len {
            return Err("checksum position beyond the frame");
        }
    }
    let needed = match gso_type & !GSO_ECN {
        GSO_NONE if gso_type == GSO_NONE => return Ok(()),
        GSO_TCPV4 => VIRTIO_NET_F_HOST_TSO4,
        GSO_TCPV6 => VIRTIO_NET_F_HOST_TSO6,
        _ => return Err("unsupported gso_type"),
    };
    if !has(needed) || (gso_type & GSO_ECN != 0 && !has(VIRTIO_NET_F_HOST_ECN)) {
        return Err("segmentation the driver did not negotiate");
    }
    if flags & F_NEEDS_CSUM == 0 {
        return Err("segmentation without a partial checksum");
    }
    if gso_size == 0 || hdr_len > frame_len {
        return Err("gso_size or hdr_len out of range");
    }
    Ok(())
}

/// Readies a receive header from the backend for the driver: one buffer (num_buffers = 1),
/// no checksum flags unless GUEST_CSUM was acked. `false` when the frame uses segmentation the
/// driver did not accept (one queued in the tap before the offloads changed): drop it.
pub(crate) fn fix_rx_header(h: &mut [u8; HDR_LEN], acked: u64) -> bool {
    let has = |b: u32| acked & bit(b) != 0;
    h[10..12].copy_from_slice(&1u16.to_le_bytes());
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        h[0] = 0;
    }
    let ok = match h[1] & !GSO_ECN {
        GSO_NONE => h[1] == GSO_NONE,
        GSO_TCPV4 => has(VIRTIO_NET_F_GUEST_TSO4),
        GSO_TCPV6 => has(VIRTIO_NET_F_GUEST_TSO6),
        _ => false,
    };
    ok && (h[1] & GSO_ECN == 0 || has(VIRTIO_NET_F_GUEST_ECN))
}

#[cfg(test)]
#[path = "offload_tests.rs"]
mod tests;

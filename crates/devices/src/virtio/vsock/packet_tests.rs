//! Packet headers and chains against mock guest memory: malformed lengths and chains are
//! errors, never reads outside the chain.

#![allow(clippy::cast_possible_truncation)]

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::GuestAddress;

use super::*;

const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;

fn mem() -> Memory {
    Memory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

fn hdr(len: u32) -> Header {
    Header {
        src_cid: 3,
        dst_cid: HOST_CID,
        src_port: 1234,
        dst_port: 5000,
        len,
        type_: TYPE_STREAM,
        op: op::RW,
        flags: 0,
        buf_alloc: 0x4_0000,
        fwd_cnt: 77,
    }
}

#[test]
fn header_round_trips_in_wire_order() {
    let h = hdr(5);
    let b = h.to_bytes();
    assert_eq!(&b[0..8], &3u64.to_le_bytes());
    assert_eq!(&b[24..28], &5u32.to_le_bytes());
    assert_eq!(&b[30..32], &op::RW.to_le_bytes());
    assert_eq!(Header::from_bytes(&b), h);
}

#[test]
fn a_packet_split_anywhere_is_read_whole() {
    let m = mem();
    let mut bytes = hdr(6).to_bytes().to_vec();
    bytes.extend_from_slice(b"abcdef");
    // Header split 20/24, payload split 2/4 with the first part in the header's buffer.
    m.write_slice(&bytes[..20], GuestAddress(0x1000)).unwrap();
    m.write_slice(&bytes[20..46], GuestAddress(0x2000)).unwrap();
    m.write_slice(&bytes[46..], GuestAddress(0x3000)).unwrap();
    let descs = [
        Descriptor::new(0x1000, 20, F_NEXT, 1),
        Descriptor::new(0x2000, 26, F_NEXT, 2),
        Descriptor::new(0x3000, 4, 0, 0),
    ];
    let mut payload = Vec::new();
    let h = read_packet(&m, &descs, &mut payload).unwrap();
    assert_eq!(h, hdr(6));
    assert_eq!(payload, b"abcdef");
}

#[test]
fn bad_lengths_and_chains_are_errors() {
    let m = mem();
    let mut payload = Vec::new();
    for (len, room) in [
        (u32::MAX, 100u32),
        (u32::MAX - 43, 100),
        (10, 9),
        (MAX_PAYLOAD as u32 + 1, 0x2_0000),
    ] {
        m.write_slice(&hdr(len).to_bytes(), GuestAddress(0x1000)).unwrap();
        let descs = [Descriptor::new(0x1000, HDR_LEN as u32 + room, 0, 0)];
        assert_eq!(
            read_packet(&m, &descs, &mut payload),
            Err(BadPacket::Len(len)),
            "len {len:#x}"
        );
    }
    // Shorter than a header; a device-writable buffer in a transmit chain.
    assert_eq!(
        read_packet(&m, &[Descriptor::new(0x1000, 43, 0, 0)], &mut payload),
        Err(BadPacket::Short)
    );
    assert_eq!(
        read_packet(&m, &[Descriptor::new(0x1000, 100, F_WRITE, 0)], &mut payload),
        Err(BadPacket::Short)
    );
    // A buffer past the end of memory (pop_chain rejects these first; still no panic here).
    assert!(read_packet(&m, &[Descriptor::new(0xf_fff0, 100, 0, 0)], &mut payload).is_err());
}

#[test]
fn receive_chains_take_header_and_payload_scattered() {
    let m = mem();
    // Linux 6.1 posts a 44-byte header buffer and a 4 KiB payload buffer.
    let descs = [
        Descriptor::new(0x1000, HDR_LEN as u32, F_WRITE | F_NEXT, 1),
        Descriptor::new(0x2000, 4096, F_WRITE, 0),
    ];
    assert_eq!(rx_capacity(&descs), Some(4096));
    let h = hdr(0);
    assert_eq!(write_packet(&m, &descs, &h, b"xyz"), Some(HDR_LEN as u32 + 3));
    let mut back = [0u8; HDR_LEN];
    m.read_slice(&mut back, GuestAddress(0x1000)).unwrap();
    assert_eq!(Header::from_bytes(&back).len, 3);
    let mut p = [0u8; 3];
    m.read_slice(&mut p, GuestAddress(0x2000)).unwrap();
    assert_eq!(&p, b"xyz");
    // Too small for the payload, too small for a header, or readable: refused.
    assert_eq!(write_packet(&m, &descs, &h, &[0; 4097]), None);
    assert_eq!(rx_capacity(&[Descriptor::new(0x1000, 40, F_WRITE, 0)]), None);
    assert_eq!(rx_capacity(&[Descriptor::new(0x1000, 100, 0, 0)]), None);
    assert_eq!(rx_capacity(&[]), None);
    // A huge buffer offers at most one packet's worth.
    assert_eq!(
        rx_capacity(&[Descriptor::new(0x1000, u32::MAX, F_WRITE, 0)]),
        Some(MAX_PAYLOAD)
    );
}

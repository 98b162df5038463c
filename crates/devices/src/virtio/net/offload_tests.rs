//! Transmit header checks and receive header fix-ups against the acked features.

use super::*;

fn hdr(flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16, csum_start: u16, csum_offset: u16) -> [u8; HDR_LEN] {
    let mut h = [0u8; HDR_LEN];
    h[0] = flags;
    h[1] = gso_type;
    for (i, v) in [hdr_len, gso_size, csum_start, csum_offset].into_iter().enumerate() {
        h[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
    h
}

#[test]
fn a_tso_segment_passes_only_with_the_features_and_sane_offsets() {
    let tso = hdr(F_NEEDS_CSUM, GSO_TCPV4, 66, 1448, 34, 16);
    assert_eq!(check_tx_header(&tso, 65_000, ALL), Ok(()));
    assert!(check_tx_header(&tso, 65_000, 0).is_err(), "no CSUM acked");
    assert!(
        check_tx_header(&tso, 65_000, bit(VIRTIO_NET_F_CSUM)).is_err(),
        "no HOST_TSO4"
    );
    assert!(check_tx_header(&tso, 40, ALL).is_err(), "checksum beyond the frame");
    assert!(check_tx_header(&hdr(F_NEEDS_CSUM, GSO_TCPV4, 66, 0, 34, 16), 9000, ALL).is_err());
    assert!(check_tx_header(&hdr(F_NEEDS_CSUM, GSO_TCPV4, 9001, 1448, 34, 16), 9000, ALL).is_err());
    assert!(
        check_tx_header(&hdr(0, GSO_TCPV6, 86, 1428, 0, 0), 9000, ALL).is_err(),
        "gso without csum"
    );
    let ecn = hdr(F_NEEDS_CSUM, GSO_TCPV6 | GSO_ECN, 86, 1428, 54, 16);
    assert_eq!(check_tx_header(&ecn, 9000, ALL), Ok(()));
    assert!(check_tx_header(&ecn, 9000, ALL & !bit(VIRTIO_NET_F_HOST_ECN)).is_err());
    // UDP fragmentation (3), USO (5), unknown types and flags, ECN on a non-GSO frame.
    for t in [3, 5, 0x42, GSO_ECN] {
        assert!(
            check_tx_header(&hdr(F_NEEDS_CSUM, t, 42, 1400, 34, 6), 9000, ALL).is_err(),
            "{t}"
        );
    }
    assert!(check_tx_header(&hdr(0x80, 0, 0, 0, 0, 0), 60, ALL).is_err());
    // A plain frame with no offloads is always fine, whatever was negotiated.
    assert_eq!(check_tx_header(&[0; HDR_LEN], 60, 0), Ok(()));
    // Offsets at the very end: the 2-byte checksum field must be inside the frame.
    assert_eq!(check_tx_header(&hdr(F_NEEDS_CSUM, 0, 0, 0, 50, 8), 60, ALL), Ok(()));
    assert!(check_tx_header(&hdr(F_NEEDS_CSUM, 0, 0, 0, 50, 9), 60, ALL).is_err());
    assert!(check_tx_header(&hdr(F_NEEDS_CSUM, 0, 0, 0, 0xffff, 0xffff), 60, ALL).is_err());
}

#[test]
fn receive_headers_get_one_buffer_and_lose_what_the_driver_did_not_accept() {
    let mut h = hdr(F_DATA_VALID, 0, 0, 0, 0, 0);
    assert!(fix_rx_header(&mut h, 0));
    assert_eq!(
        h,
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        "flags cleared without GUEST_CSUM"
    );
    let mut h = hdr(F_NEEDS_CSUM, GSO_TCPV4, 66, 1448, 34, 16);
    assert!(fix_rx_header(&mut h, ALL));
    assert_eq!((h[0], h[1], &h[10..]), (F_NEEDS_CSUM, GSO_TCPV4, &[1u8, 0][..]));
    assert!(!fix_rx_header(
        &mut hdr(F_NEEDS_CSUM, GSO_TCPV4, 66, 1448, 34, 16),
        bit(VIRTIO_NET_F_GUEST_CSUM)
    ));
    assert!(!fix_rx_header(
        &mut hdr(F_NEEDS_CSUM, GSO_TCPV6 | GSO_ECN, 0, 1, 0, 0),
        ALL & !bit(VIRTIO_NET_F_GUEST_ECN)
    ));
    assert!(!fix_rx_header(&mut hdr(0, 3, 0, 0, 0, 0), ALL));
}

#[test]
fn tun_flags_follow_the_guest_features() {
    assert_eq!(tun_flags(0), 0);
    assert_eq!(tun_flags(HOST_OFFLOADS), 0);
    assert_eq!(tun_flags(ALL), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN);
    assert_eq!(tun_flags(bit(VIRTIO_NET_F_GUEST_TSO4)), 0, "TSO needs the checksum too");
    let csum_ecn = bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_ECN);
    assert_eq!(tun_flags(csum_ecn), TUN_F_CSUM, "ECN needs a TSO");
}

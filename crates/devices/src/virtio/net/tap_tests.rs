//! A real tap (needs root, as the virtio-net integration test does): vnet headers on, the
//! offloads probed, and frames crossing with the header in front.

use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

const NAME: &str = "hntaptest0";

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?} failed");
}

/// An ARP request from 172.31.79.2 (MAC 02:00:00:00:00:02) for 172.31.79.1.
fn arp_request() -> Vec<u8> {
    let mac = [2, 0, 0, 0, 0, 2];
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[172, 31, 79, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[172, 31, 79, 1]);
    f
}

#[test]
fn a_tap_takes_and_gives_vnet_headers_and_accepts_the_offloads() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test must run as root (it creates a tap)");
    }
    let mut tap = Tap::open(NAME).unwrap();
    assert!(tap.vnet_hdr());
    assert_eq!(
        tap.offload_features(),
        offload::ALL,
        "this host's tap supports every offload"
    );
    tap.set_offloads(offload::ALL).unwrap();
    ip(&["addr", "add", "172.31.79.1/24", "dev", NAME]);
    ip(&["link", "set", NAME, "up"]);

    let mut packet = vec![0u8; HDR_LEN];
    packet.extend_from_slice(&arp_request());
    tap.send(&packet).unwrap();
    let mut buf = vec![0u8; 65_600];
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        assert!(Instant::now() < deadline, "no ARP reply from the host");
        match tap.recv(&mut buf).unwrap() {
            // Skip IPv6 noise; the ARP reply is for our MAC, ethertype 0x0806, opcode 2.
            Some(n) if n > HDR_LEN + 22 && buf[HDR_LEN + 12..HDR_LEN + 14] == [8, 6] => break buf[..n].to_vec(),
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert_eq!(
        reply[..HDR_LEN - 2],
        [0; HDR_LEN - 2],
        "a plain frame has an empty header"
    );
    assert_eq!(&reply[HDR_LEN..HDR_LEN + 6], &[2, 0, 0, 0, 0, 2]);
    assert_eq!(&reply[HDR_LEN + 20..HDR_LEN + 22], &[0, 2], "ARP reply");
    tap.set_offloads(0).unwrap();
}

//! End to end: the stock Linux virtio-net driver against hearth's device on a host tap, in one
//! boot, with checksum and TCP segmentation offloads negotiated. The host sends 1 MiB of
//! pseudo-random bytes to the guest, which prints their checksum and sends them back; both
//! directions must arrive intact and the driver must have acked the offloads. Needs root: the
//! tap hnet0 lives in a network namespace of its own (hnetns0, removed at the end, even on
//! failure), where hearth runs and the test's sockets are made.
//!
//! Size: on a PVM host the guest kernel manages a few dozen packets and nc writes a second
//! (~25-35 KB/s measured here with 8 MiB each way, ~1.1-1.5 KB per packet), so 1 MiB each way
//! keeps the test near a minute.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

const TAP: &str = "hnet0";
const NETNS: &str = "hnetns0";
const HOST_IP: &str = "172.31.77.1";
const GUEST_IP: &str = "172.31.77.2";
const LEN: usize = 1 << 20;
/// virtio-net feature bits (virtio 1.2 §5.1.3) the driver must have acked on a tap.
const OFFLOADS: [(usize, &str); 4] = [(0, "CSUM"), (1, "GUEST_CSUM"), (7, "GUEST_TSO4"), (11, "HOST_TSO4")];
/// Generous: a loaded PVM host has taken minutes for one boot.
const TIMEOUT_SECS: &str = "900";

fn ip(args: &[&str]) {
    let st = Command::new("ip")
        .args(["netns", "exec", NETNS, "ip"])
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "ip {args:?} in {NETNS} failed");
}

/// Removes the namespace (and the tap in it) when the test ends, passed or not.
struct NetnsGuard;
impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    }
}

/// Runs `f` on a thread that entered the test's network namespace: sockets it makes live there.
fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/var/run/netns/{NETNS}")).unwrap();
        // SAFETY: setns on an open namespace fd; it changes only this thread's namespace.
        let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// 1 MiB that no compression or stuck byte would reproduce (xorshift).
fn payload() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(LEN);
    while v.len() < LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

/// The (bytes, packets) counters of eth0 from the guest's /proc/net/dev: (rx, tx).
fn eth0_counters(console: &str) -> Option<((u64, u64), (u64, u64))> {
    let line = console.lines().find_map(|l| l.trim().strip_prefix("eth0:"))?;
    let n: Vec<u64> = line.split_whitespace().map(|w| w.parse().ok()).collect::<Option<_>>()?;
    Some(((*n.first()?, *n.get(1)?), (*n.get(8)?, *n.get(9)?)))
}

#[test]
fn linux_moves_1_mib_each_way_over_a_tap_with_offloads() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test must run as root (it creates a tap)");
    let dir = common::built_guest_dir();
    // A leftover from an interrupted run would make `add` fail.
    drop(NetnsGuard);
    let st = Command::new("ip").args(["netns", "add", NETNS]).status().unwrap();
    assert!(st.success(), "ip netns add {NETNS} failed");
    let _guard = NetnsGuard;
    // lo up: the test's last connects reach the listeners through it.
    ip(&["link", "set", "lo", "up"]);
    ip(&["tuntap", "add", "dev", TAP, "mode", "tap"]);
    ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", TAP]);
    ip(&["link", "set", TAP, "up"]);

    let data = payload();
    let sum = common::sha256_hex(&data);
    let (down, up) = in_netns(|| {
        let bind = || TcpListener::bind((HOST_IP, 0)).unwrap();
        (bind(), bind())
    });
    let (down_port, up_port) = (down.local_addr().unwrap().port(), up.local_addr().unwrap().port());
    let sender = std::thread::spawn(move || {
        let (mut s, _) = down.accept().unwrap();
        s.set_write_timeout(Some(Duration::from_secs(180))).unwrap();
        let _ = s.write_all(&data);
        // Closing the connection is what ends the guest's nc.
    });
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = up.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
        let mut got = Vec::with_capacity(LEN);
        let mut buf = vec![0u8; 65536];
        while got.len() < LEN {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        drop(s);
        got
    });

    let script = format!(
        "ifconfig eth0 {GUEST_IP} netmask 255.255.255.0 up && \
         echo features=$(cat /sys/class/net/eth0/device/features) && \
         nc {HOST_IP} {down_port} </dev/null >/tmp/d; echo received; sha256sum /tmp/d; \
         nc {HOST_IP} {up_port} </tmp/d; echo sent; cat /proc/net/dev"
    );
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            NETNS,
            env!("CARGO_BIN_EXE_hearth"),
            "run",
            "--memory",
            "128",
            "--timeout",
            TIMEOUT_SECS,
        ])
        .arg("--kernel")
        .arg(dir.join("vmlinux"))
        .arg("--initrd")
        .arg(dir.join("initramfs.cpio"))
        .args(["--net", &format!("tap={TAP}")])
        .args(["--", "/bin/sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let ctx = format!("--- console ---\n{console}\n--- stderr ---\n{stderr}");
    assert!(console.contains("hearth-guest: init ready"), "no userspace\n{ctx}");

    let features = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("features="))
        .unwrap_or_else(|| panic!("the guest printed no features\n{ctx}"));
    for (bit, name) in OFFLOADS {
        assert_eq!(
            features.as_bytes().get(bit),
            Some(&b'1'),
            "{name} not acked: {features}\n{ctx}"
        );
    }
    let guest_sum = console
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with("/tmp/d") && l.len() > 64)
        .map(|l| l[..64].to_string())
        .unwrap_or_else(|| panic!("the guest printed no checksum\n{ctx}"));
    assert_eq!(guest_sum, sum, "the guest received other bytes\n{ctx}");
    // If the guest never connected, these connections end the threads' waits.
    in_netns(move || {
        let _ = TcpStream::connect((HOST_IP, down_port));
        let _ = TcpStream::connect((HOST_IP, up_port));
    });
    sender.join().unwrap();
    let received = receiver.join().unwrap();
    assert_eq!(received.len(), LEN, "bytes received by the host\n{ctx}");
    assert_eq!(
        common::sha256_hex(&received),
        sum,
        "the host received other bytes\n{ctx}"
    );

    // The guest's own counters saw every byte; how many packets it took is reported, not
    // asserted: on this host TCP is ACK-clocked by the slow guest, not by the device.
    let ((rx_bytes, rx_packets), (tx_bytes, tx_packets)) =
        eth0_counters(&console).unwrap_or_else(|| panic!("no eth0 counters\n{ctx}"));
    eprintln!("guest eth0: rx {rx_bytes} B in {rx_packets} packets, tx {tx_bytes} B in {tx_packets} packets");
    assert!(rx_bytes >= LEN as u64 && tx_bytes >= LEN as u64, "counters\n{ctx}");
    assert!(
        console.contains("hearth-guest: exit status 0"),
        "guest command failed\n{ctx}"
    );
    assert_eq!(out.status.code(), Some(0), "hearth did not exit cleanly\n{ctx}");
}

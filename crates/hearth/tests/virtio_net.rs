//! End to end: the stock Linux virtio-net driver against hearth's device on a host tap, in one
//! boot, with checksum and TCP segmentation offloads negotiated and a transmit rate limit. The
//! guest's hearth-net (guest/tools/hearth-net.c: 256 KiB read()/write() calls) receives 4 MiB of
//! pseudo-random bytes from the host and sends 2 MiB of its pattern back; both sides compare
//! FNV-1a checksums, the driver must have acked the offloads, and the device's
//! `tx_rate_limiter_throttled` counter (read over the API while the guest waits) must be > 0.
//! Needs root: the tap hnet0 lives in a network namespace of its own (hnetns0, removed at the
//! end, even on failure), where hearth runs and the test's sockets are made.
//!
//! Size: on this PVM host (itself a VM) a TCP round trip through the guest costs ~30 ms, and
//! TCP moves ~60-80 KB/s either way even in 256 KiB writes (measured: 8 MiB down in 155 s, 8 MiB
//! up in 99 s); the rates are printed, not asserted.

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
/// Host -> guest, unlimited.
const DOWN: usize = 4 << 20;
/// Guest -> host, under `TX_BPS`.
const UP: usize = 2 << 20;
/// The transmit limit (bytes a second, one second's burst): far above the ACKs of the download
/// (~1.5 KB/s), below what the guest sends unlimited here (~80 KB/s), so the limiter must hold
/// frames back during the upload.
const TX_BPS: u64 = 40 << 10;
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

/// `len` bytes that no compression or stuck byte would reproduce (xorshift).
fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// 64-bit FNV-1a, as hearth-net prints it.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What `hearth-net send` sends: byte i is (i * 2654435761 mod 2^32) >> 24.
fn pattern(len: usize) -> Vec<u8> {
    // i mod 2^32 (the guest computes in 32 bits), then the top byte of the product.
    (0u32..)
        .take(len)
        .map(|i| i.wrapping_mul(2_654_435_761).to_be_bytes()[0])
        .collect()
}

/// hearth-net's result line for `what` (recv/send): (len, ns, fnv).
fn result(console: &str, what: &str) -> Option<(u64, u64, u64)> {
    let rest = console
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("hearth-net: {what} ")))?;
    let field = |k: &str| rest.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}=")));
    Some((
        field("len")?.parse().ok()?,
        field("ns")?.parse().ok()?,
        u64::from_str_radix(field("fnv")?, 16).ok()?,
    ))
}

/// The (bytes, packets) counters of eth0 from the guest's /proc/net/dev: (rx, tx).
fn eth0_counters(console: &str) -> Option<((u64, u64), (u64, u64))> {
    let line = console.lines().find_map(|l| l.trim().strip_prefix("eth0:"))?;
    let n: Vec<u64> = line.split_whitespace().map(|w| w.parse().ok()).collect::<Option<_>>()?;
    Some(((*n.first()?, *n.get(1)?), (*n.get(8)?, *n.get(9)?)))
}

/// A Prometheus counter of eth0 from `GET /metrics/prometheus`.
fn prometheus_counter(text: &str, name: &str) -> Option<u64> {
    let prefix = format!("hearth_net_{name}_total{{iface=\"eth0\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

fn kib_per_s(len: u64, ns: u64) -> f64 {
    len as f64 / 1024.0 / (ns.max(1) as f64 / 1e9)
}

#[test]
fn linux_moves_mibs_each_way_over_a_tap_with_offloads_and_a_tx_limit() {
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
    let sock = std::env::temp_dir().join(format!("hearth-virtio-net-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);

    let data = payload(DOWN);
    let down_fnv = fnv(&data);
    let up_fnv = fnv(&pattern(UP));
    let (down, up, done) = in_netns(|| {
        let bind = || TcpListener::bind((HOST_IP, 0)).unwrap();
        (bind(), bind(), bind())
    });
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    let (down_port, up_port, done_port) = (port(&down), port(&up), port(&done));
    let sender = std::thread::spawn(move || {
        let (mut s, _) = down.accept().unwrap();
        s.set_write_timeout(Some(Duration::from_secs(180))).unwrap();
        let _ = s.write_all(&data);
        // Closing the connection is what ends the guest's read.
    });
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = up.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
        let mut got = Vec::with_capacity(UP);
        let mut buf = vec![0u8; 1 << 18];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        // Closing tells the guest everything arrived.
        drop(s);
        got
    });
    // The guest's last connection waits here while the test reads the metrics of the running VM.
    let metrics_sock = sock.clone();
    let metrics = std::thread::spawn(move || {
        let (s, _) = done.accept().unwrap();
        let (code, text) = common::counting_vm::api(&metrics_sock, "GET", "/metrics/prometheus", None);
        drop(s);
        (code, text)
    });

    let script = format!(
        "ifconfig eth0 {GUEST_IP} netmask 255.255.255.0 up && \
         echo features=$(cat /sys/class/net/eth0/device/features) && \
         hearth-net recv {HOST_IP} {down_port}; hearth-net send {HOST_IP} {up_port} {UP}; \
         hearth-net recv {HOST_IP} {done_port}; cat /proc/net/dev"
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
        .arg("--api-sock")
        .arg(&sock)
        .arg("--kernel")
        .arg(dir.join("vmlinux"))
        .arg("--initrd")
        .arg(dir.join("initramfs.cpio"))
        .args(["--net", &format!("tap={TAP},tx_bps={TX_BPS}")])
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
    // If the guest never connected, these connections end the threads' waits.
    in_netns(move || {
        for p in [down_port, up_port, done_port] {
            let _ = TcpStream::connect((HOST_IP, p));
        }
    });
    sender.join().unwrap();
    let received = receiver.join().unwrap();
    let (code, prom) = metrics.join().unwrap();

    let (len, down_ns, fnv_seen) = result(&console, "recv").unwrap_or_else(|| panic!("no recv line\n{ctx}"));
    assert_eq!(
        (len, fnv_seen),
        (DOWN as u64, down_fnv),
        "the guest received other bytes\n{ctx}"
    );
    let (len, up_ns, fnv_sent) = result(&console, "send").unwrap_or_else(|| panic!("no send line\n{ctx}"));
    assert_eq!(
        (len, fnv_sent),
        (UP as u64, up_fnv),
        "the guest sent other bytes\n{ctx}"
    );
    assert_eq!(received.len(), UP, "bytes received by the host\n{ctx}");
    assert_eq!(fnv(&received), up_fnv, "the host received other bytes\n{ctx}");
    eprintln!(
        "host -> guest: {DOWN} B in {:.2} s ({:.1} KiB/s); guest -> host (tx_bps={TX_BPS}): {UP} B in {:.2} s ({:.1} KiB/s)",
        down_ns as f64 / 1e9,
        kib_per_s(DOWN as u64, down_ns),
        up_ns as f64 / 1e9,
        kib_per_s(UP as u64, up_ns)
    );

    // The transmit limiter held frames back (its own counter, not a clock), and the device
    // counted every byte the guest sent.
    assert_eq!(code, 200, "GET /metrics/prometheus\n{prom}\n{ctx}");
    let throttled = prometheus_counter(&prom, "tx_rate_limiter_throttled")
        .unwrap_or_else(|| panic!("no tx_rate_limiter_throttled\n{prom}"));
    let tx_bytes = prometheus_counter(&prom, "tx_bytes_count").unwrap_or_else(|| panic!("no tx_bytes_count\n{prom}"));
    eprintln!("device: tx_rate_limiter_throttled {throttled}, tx_bytes_count {tx_bytes}");
    assert!(
        throttled > 0,
        "the transmit limiter never held frames back\n{prom}\n{ctx}"
    );
    assert!(tx_bytes >= UP as u64, "tx_bytes_count {tx_bytes}\n{ctx}");

    // The guest's own counters saw every byte; how many packets it took is reported, not
    // asserted.
    let ((rx_bytes, rx_packets), (tx_bytes, tx_packets)) =
        eth0_counters(&console).unwrap_or_else(|| panic!("no eth0 counters\n{ctx}"));
    eprintln!("guest eth0: rx {rx_bytes} B in {rx_packets} packets, tx {tx_bytes} B in {tx_packets} packets");
    assert!(rx_bytes >= DOWN as u64 && tx_bytes >= UP as u64, "counters\n{ctx}");
    assert!(
        console.contains("hearth-guest: exit status 0"),
        "guest command failed\n{ctx}"
    );
    assert_eq!(out.status.code(), Some(0), "hearth did not exit cleanly\n{ctx}");
    let _ = std::fs::remove_file(&sock);
}

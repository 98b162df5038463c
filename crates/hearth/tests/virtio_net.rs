//! End to end: the stock Linux virtio-net driver against hearth's device on a host tap, in one
//! boot. The guest sends 256 KiB of random bytes over TCP to a listener in this test; the
//! checksum the host computes must equal the one the guest prints. Needs root (it creates the
//! tap interface hnet0 and removes it again, even on failure).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

const TAP: &str = "hnet0";
const HOST_IP: &str = "172.31.77.1";
const GUEST_IP: &str = "172.31.77.2";
const LEN: usize = 4 * 64 * 1024;
/// Generous: a loaded PVM host has taken minutes for one boot.
const TIMEOUT_SECS: &str = "900";

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?} failed");
}

/// Removes the tap interface when the test ends, passed or not.
struct TapGuard;
impl Drop for TapGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["tuntap", "del", "dev", TAP, "mode", "tap"])
            .status();
    }
}

#[test]
fn linux_sends_over_virtio_net_to_a_host_tap() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test must run as root (it creates a tap)");
    let dir = common::built_guest_dir();
    // A leftover from an interrupted run would make `add` fail.
    drop(TapGuard);
    ip(&["tuntap", "add", "dev", TAP, "mode", "tap"]);
    let _guard = TapGuard;
    ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", TAP]);
    ip(&["link", "set", TAP, "up"]);

    let listener = TcpListener::bind((HOST_IP, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
        let mut data = Vec::with_capacity(LEN);
        let mut buf = vec![0u8; 65536];
        while data.len() < LEN {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
        // Closing the connection is what ends the guest's nc.
        drop(s);
        data
    });

    let script = format!(
        "ifconfig eth0 {GUEST_IP} netmask 255.255.255.0 up && \
         dd if=/dev/urandom bs=64k count=4 2>/dev/null | tee /tmp/d | nc {HOST_IP} {port}; \
         echo sent; sha256sum /tmp/d"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["run", "--memory", "128", "--timeout", TIMEOUT_SECS])
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

    let guest_sum = console
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with("/tmp/d") && l.len() > 64)
        .map(|l| l[..64].to_string())
        .unwrap_or_else(|| panic!("the guest printed no checksum\n{ctx}"));
    // If the guest never connected, this connection ends the receiver's wait.
    let _ = TcpStream::connect((HOST_IP, port));
    let received = receiver.join().unwrap();
    assert_eq!(received.len(), LEN, "bytes received by the host\n{ctx}");
    assert_eq!(
        common::sha256_hex(&received),
        guest_sum,
        "the host received other bytes\n{ctx}"
    );
    assert!(
        console.contains("hearth-guest: exit status 0"),
        "guest command failed\n{ctx}"
    );
    assert_eq!(out.status.code(), Some(0), "hearth did not exit cleanly\n{ctx}");
}

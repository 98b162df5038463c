//! End to end: `--net user` (virtio-net on a passt child process) with the stock Linux driver,
//! in one boot. Nothing here needs root: no tap, no namespace; the guest reaches the host only
//! through passt's sockets, and every address the test uses is on this machine's loopback.
//!
//! - guest → host: the guest sends 32 KiB over TCP to 10.0.2.2 (passt's gateway, mapped to the
//!   host's 127.0.0.1) and the host checks the bytes against the checksum the guest prints;
//! - host → guest over the same path: the guest downloads 64 KiB from a second host listener;
//! - hostfwd: the host connects to a forwarded loopback port and sends 64 KiB to a guest
//!   `nc -l` (after the guest has sent traffic, so passt knows its MAC);
//! - passt is gone (killed and reaped) once hearth has exited.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const GATEWAY: &str = "10.0.2.2";
/// Small on purpose: Debian 12's passt (0.0~git20230309) resets a guest-initiated connection
/// about 24 s after its SYN whatever the traffic (reproduced without hearth, on a tap in a
/// network namespace), and the guest's TCP sends only a few KiB/s on a loaded PVM host.
const UP: usize = 32 * 1024;
const DOWN: usize = 64 * 1024;
const FWD: usize = 64 * 1024;
const GUEST_PORT: u16 = 8080;
/// Generous: a loaded PVM host has taken minutes for one boot.
const TIMEOUT_SECS: &str = "900";

/// Deterministic bytes that do not compress or repeat (xorshift64).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed.to_le_bytes()[3]
        })
        .collect()
}

/// The guest's `sha256sum FILE` line for `file`, from the console.
fn guest_sum(console: &str, file: &str) -> Option<String> {
    console
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with(file) && l.len() > 64)
        .map(|l| l[..64].to_string())
}

/// The pid of `parent`'s child named passt (or passt.avx2, which passt re-executes itself as).
fn passt_child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // pid (comm) state ppid ...
        let (comm, rest) = stat.split_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && comm.contains("(passt")).then_some(pid)
    })
}

#[test]
fn linux_on_user_mode_net_reaches_the_host_and_is_reached_through_hostfwd() {
    let dir = common::built_guest_dir();
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = up.local_addr().unwrap().port();
    let down = TcpListener::bind("127.0.0.1:0").unwrap();
    let down_port = down.local_addr().unwrap().port();
    let fwd_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

    // Should passt reset a connection anyway (see UP), the guest retries a bounded number of
    // times, each retry printed, so the host side serves every connection it gets.
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut data = Vec::new();
            for s in up.incoming() {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = s else { continue };
                s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
                data = Vec::with_capacity(UP);
                let mut buf = vec![0u8; 65536];
                while data.len() < UP {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                }
                // Closing the connection is what ends the guest's nc.
                if data.len() == UP {
                    break;
                }
            }
            data
        })
    };
    let down_data = noise(DOWN, 0x1234_5678);
    let sender = {
        let data = down_data.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            for s in down.incoming() {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = s else { continue };
                s.set_write_timeout(Some(Duration::from_secs(300))).unwrap();
                let _ = s.write_all(&data);
            }
        })
    };

    let script = format!(
        "ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && \
         dd if=/dev/urandom of=/tmp/up bs=1k count={up_k} 2>/dev/null; \
         n=0; until nc {GATEWAY} {up_port} </tmp/up || [ $n -ge 4 ]; do n=$((n+1)); echo retry-up; sleep 1; done; \
         echo up-sent; sha256sum /tmp/up; \
         n=0; until nc {GATEWAY} {down_port} </dev/null >/tmp/down && [ $(wc -c </tmp/down) = {DOWN} ] || [ $n -ge 4 ]; \
         do n=$((n+1)); echo retry-down; sleep 1; done; sha256sum /tmp/down; \
         {{ nc -l -p {GUEST_PORT} </dev/null >/tmp/fwd; echo fwd-closed; }} & \
         i=0; until grep -q ':{GUEST_PORT:04X} 00000000:0000 0A' /proc/net/tcp || [ $i -gt 600 ]; do \
         sleep 0.1; i=$((i+1)); done; echo fwd-listening; \
         wait; sha256sum /tmp/fwd",
        up_k = UP / 1024
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([
            "run",
            "--log-level",
            "info",
            "--memory",
            "128",
            "--timeout",
            TIMEOUT_SECS,
        ])
        .arg("--kernel")
        .arg(dir.join("vmlinux"))
        .arg("--initrd")
        .arg(dir.join("initramfs.cpio"))
        .args(["--net", &format!("user,hostfwd=tcp:127.0.0.1:{fwd_port}-{GUEST_PORT}")])
        .args(["--", "/bin/sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let hearth_pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let console = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });

    // Once the guest listens, send through the forward (while the guest uploads).
    let fwd_data = noise(FWD, 0x9abc_def0);
    let mut passt_pid = None;
    let mut forwarder = None;
    while let Ok(line) = rx.recv() {
        if line.trim() == "fwd-listening" {
            passt_pid = passt_child_of(hearth_pid);
            let data = fwd_data.clone();
            forwarder = Some(std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", fwd_port)).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(300))).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
                s.write_all(&data).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                // Until the guest's nc closes its side.
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            }));
            break;
        }
    }
    let status = child.wait().unwrap();
    let console = console.join().unwrap();
    let stderr = stderr.join().unwrap();
    let ctx = format!("--- console ---\n{console}\n--- stderr ---\n{stderr}");
    assert!(console.contains("hearth-guest: init ready"), "no userspace\n{ctx}");
    assert!(forwarder.is_some(), "the guest never listened\n{ctx}");
    forwarder.unwrap().join().unwrap();
    // These connections end the host threads' waits.
    done.store(true, Ordering::SeqCst);
    let _ = TcpStream::connect(("127.0.0.1", up_port));
    let _ = TcpStream::connect(("127.0.0.1", down_port));
    let received = receiver.join().unwrap();
    sender.join().unwrap();

    assert_eq!(received.len(), UP, "bytes the host received\n{ctx}");
    let up_sum = guest_sum(&console, "/tmp/up").unwrap_or_else(|| panic!("no upload checksum\n{ctx}"));
    assert_eq!(
        common::sha256_hex(&received),
        up_sum,
        "the host received other bytes\n{ctx}"
    );
    let down_sum = guest_sum(&console, "/tmp/down").unwrap_or_else(|| panic!("no download checksum\n{ctx}"));
    assert_eq!(
        common::sha256_hex(&down_data),
        down_sum,
        "the guest downloaded other bytes\n{ctx}"
    );
    let fwd_sum = guest_sum(&console, "/tmp/fwd").unwrap_or_else(|| panic!("no hostfwd checksum\n{ctx}"));
    assert_eq!(
        common::sha256_hex(&fwd_data),
        fwd_sum,
        "the guest got other bytes through hostfwd\n{ctx}"
    );
    assert!(
        console.contains("hearth-guest: exit status 0"),
        "guest command failed\n{ctx}"
    );
    eprintln!("guest connection retries: {}", console.matches("retry-").count());
    assert_eq!(status.code(), Some(0), "hearth did not exit cleanly\n{ctx}");

    let passt_pid = passt_pid.unwrap_or_else(|| panic!("hearth had no passt child\n{ctx}"));
    assert!(
        !std::path::Path::new(&format!("/proc/{passt_pid}")).exists(),
        "passt (pid {passt_pid}) outlived hearth\n{ctx}"
    );
}

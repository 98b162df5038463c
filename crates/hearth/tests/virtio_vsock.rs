//! End to end: the stock Linux virtio-vsock driver against hearth's device, in one boot, with
//! the guest's /bin/hearth-vsock (guest/tools/hearth-vsock.c) on the other end.
//!
//! Host → guest: four concurrent connections through the Unix socket (`CONNECT 5000`), one of
//! them carrying 2 MiB, each answered by the guest with the byte count and FNV-1a checksum.
//! Guest → host: 2 MiB to `<uds>_6000`, checked here and answered. Refused cases: CONNECT to a
//! port nobody listens on, malformed lines, and a guest connect to a port without a
//! `<uds>_<port>` listener. Then the guest powers off and hearth must exit 0.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIG: usize = 2 << 20;
const GUEST_PORT: u32 = 5000;
const HOST_PORT: u32 = 6000;
/// Generous: a loaded PVM host has taken minutes for one boot.
const TIMEOUT_SECS: &str = "900";
const IO_TIMEOUT: Duration = Duration::from_secs(600);

/// 64-bit FNV-1a, as hearth-vsock computes it.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// hearth-vsock's send pattern (its arithmetic is mod 2^32, hence the truncating casts).
#[allow(clippy::cast_possible_truncation)]
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn summary(data: &[u8]) -> String {
    format!("len={} fnv={:016x}", data.len(), fnv(data))
}

/// Connects to the device's socket and sends `line`; returns the stream and the reply line
/// (empty when hearth closed the connection instead).
fn connect_line(uds: &Path, line: &[u8]) -> (UnixStream, String) {
    let mut s = UnixStream::connect(uds).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(line).unwrap();
    let mut reply = Vec::new();
    let mut b = [0u8; 1];
    while let Ok(1) = s.read(&mut b) {
        reply.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    (s, String::from_utf8_lossy(&reply).into_owned())
}

/// One host → guest connection carrying `data`; returns (OK line, guest's answer).
fn host_to_guest(uds: &Path, data: &[u8]) -> (String, String) {
    let (mut s, ok) = connect_line(uds, format!("CONNECT {GUEST_PORT}\n").as_bytes());
    if !ok.starts_with("OK ") {
        return (ok, String::new());
    }
    s.write_all(data).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    (ok, answer.trim().to_string())
}

struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn linux_talks_to_the_host_over_virtio_vsock() {
    let dir = common::built_guest_dir();
    let tmp = std::env::temp_dir().join(format!("hearth-vsock-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let _cleanup = Cleanup(tmp.clone());
    let uds = tmp.join("v.sock");

    // The guest's connections to CID 2 port 6000 land here.
    let listener = UnixListener::bind(format!("{}_{HOST_PORT}", uds.display())).unwrap();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut data = Vec::new();
        s.read_to_end(&mut data).unwrap();
        s.write_all(format!("{}\n", summary(&data)).as_bytes()).unwrap();
        data
    });

    let script = format!(
        "hearth-vsock listen {GUEST_PORT} 4 & \
         hearth-vsock send 2 {HOST_PORT} {BIG}; hearth-vsock send 2 6001 10; wait"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["run", "--memory", "128", "--timeout", TIMEOUT_SECS])
        .arg("--kernel")
        .arg(dir.join("vmlinux"))
        .arg("--initrd")
        .arg(dir.join("initramfs.cpio"))
        .arg("--vsock")
        .arg(format!("cid=3,uds={}", uds.display()))
        .args(["--", "/bin/sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
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
    // Host connections wait for the guest's listener.
    let listening = rx
        .iter()
        .any(|l| l.contains(&format!("hearth-vsock: listening {GUEST_PORT}")));

    let mut checks = Vec::new();
    if listening {
        // Refused: nobody listens on guest port 5999; malformed lines.
        checks.push(("CONNECT to a closed port", connect_line(&uds, b"CONNECT 5999\n").1));
        for bad in [&b"HELLO\n"[..], b"CONNECT 5000 x\n", b"CONNECT\n", &[b'C'; 40]] {
            checks.push(("malformed line", connect_line(&uds, bad).1));
        }
        // Four at once; the big one keeps the others company.
        let sizes = [BIG, 65_536, 1, 0];
        let threads: Vec<_> = sizes
            .iter()
            .map(|&n| {
                let uds = uds.clone();
                std::thread::spawn(move || {
                    let data = pattern(n);
                    let (ok, answer) = host_to_guest(&uds, &data);
                    (ok, answer, summary(&data))
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let status = child.wait().unwrap();
        let console = console.join().unwrap();
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        let ctx = format!("--- console ---\n{console}\n--- stderr ---\n{stderr}");

        for (what, reply) in &checks {
            assert_eq!(reply, "", "{what}: hearth should have closed the client\n{ctx}");
        }
        let mut ports = Vec::new();
        for (ok, answer, expected) in &results {
            let port: u32 = ok
                .strip_prefix("OK ")
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no OK line: {ok:?}\n{ctx}"));
            ports.push(port);
            assert_eq!(answer, expected, "the guest received other bytes\n{ctx}");
        }
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 4, "host ports must differ: {ports:?}");
        assert!(console.contains("hearth-vsock: served 4"), "{ctx}");

        let sent = summary(&pattern(BIG));
        assert!(
            console.contains(&format!("hearth-vsock: sent {sent} reply={sent}")),
            "guest → host transfer\n{ctx}"
        );
        assert_eq!(receiver.join().unwrap(), pattern(BIG), "bytes the host received");
        assert!(
            console.contains("hearth-vsock: connect 2:6001 failed errno 104")
                || console.contains("hearth-vsock: connect 2:6001 failed errno 111"),
            "a guest connect without a listener must be refused\n{ctx}"
        );
        assert!(console.contains("hearth-guest: exit status 0"), "{ctx}");
        assert_eq!(status.code(), Some(0), "hearth did not exit cleanly\n{ctx}");
    } else {
        let status = child.wait().unwrap();
        let console = console.join().unwrap();
        panic!("the guest never listened (hearth: {status})\n{console}");
    }
}

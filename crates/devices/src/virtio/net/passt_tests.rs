//! The passt backend with a real passt (Debian package passt, see scripts/install-deps.sh) and,
//! for a peer that misbehaves on purpose, a shell script standing in for it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;

const PASST: &str = "passt";

/// Serialises writing the stand-in scripts and forking in these tests: a child forked by one
/// test while another still has its script open for writing makes exec of that script fail
/// (ETXTBSY) or the script die.
static FORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn spawn(program: &str, forwards: &[PortForward]) -> Result<Passt, PasstError> {
    let _guard = FORK.lock().unwrap_or_else(|e| e.into_inner());
    Passt::spawn(program, forwards)
}

/// Waits (bounded) until `backend` has a frame for us.
fn recv_within(p: &mut Passt, buf: &mut [u8], limit: Duration) -> Option<usize> {
    let start = Instant::now();
    while start.elapsed() < limit {
        p.ack_event();
        if let Some(n) = p.recv(buf).unwrap() {
            return Some(n);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// An ARP request from `mac`/GUEST_IP for GATEWAY_IP.
fn arp_request(mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&GUEST_IP.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&GATEWAY_IP.octets());
    f
}

#[test]
fn a_real_passt_answers_arp_for_the_gateway() {
    let mut p = spawn(PASST, &[]).unwrap();
    let mac = [0x02, 0, 0, 0, 0, 0x15];
    assert!(p.tx_ready());
    p.send(&arp_request(mac)).unwrap();
    let mut buf = vec![0u8; MAX_FRAME];
    let mut reply = None;
    // passt may send other frames first (nothing asked for them, but be lenient about order).
    for _ in 0..8 {
        let Some(n) = recv_within(&mut p, &mut buf, Duration::from_secs(20)) else {
            break;
        };
        if n >= 42 && buf[12..14] == [0x08, 0x06] {
            reply = Some(buf[..n].to_vec());
            break;
        }
    }
    let reply = reply.expect("no ARP reply from passt");
    assert_eq!(&reply[..6], &mac, "to our MAC");
    assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
    assert_eq!(&reply[28..32], &GATEWAY_IP.octets(), "for the gateway");
    assert_eq!(&reply[38..42], &GUEST_IP.octets(), "to the guest");
}

#[test]
fn dropping_the_backend_kills_and_reaps_passt() {
    let p = spawn(PASST, &[]).unwrap();
    let pid = p.child.id();
    assert!(PathBuf::from(format!("/proc/{pid}")).exists());
    drop(p);
    // Reaped, so the pid is gone (not even a zombie).
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "passt {pid} still there"
    );
}

#[test]
fn a_host_port_in_use_is_a_one_line_error_naming_it() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let fwd = PortForward {
        protocol: Protocol::Tcp,
        host_addr: Some(Ipv4Addr::LOCALHOST),
        host_port: port,
        guest_port: 80,
    };
    let Err(e) = spawn(PASST, &[fwd]) else {
        panic!("spawned despite a taken port")
    };
    assert_eq!(
        e.to_string(),
        format!("hostfwd=tcp:127.0.0.1:{port}-80: the host port is not free")
    );
}

#[test]
fn a_missing_passt_is_a_clear_error() {
    let Err(e) = spawn("/nonexistent/passt", &[]) else {
        panic!("spawned nothing?")
    };
    assert!(e.to_string().contains("Debian package: passt"), "{e}");
}

/// A stand-in for passt: writes `bytes` (printf escapes) to the fd given after --fd, then
/// lingers without reading.
fn fake_passt(dir: &std::path::Path, bytes: &str) -> String {
    let _guard = FORK.lock().unwrap_or_else(|e| e.into_inner());
    let path = dir.join("fake-passt");
    let script = format!(
        "#!/bin/sh\nwhile [ \"$1\" != --fd ]; do shift; done\nprintf '{bytes}' >&$2\nexec sleep 30 </dev/null\n"
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hearth-passt-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_oversized_length_closes_the_stream_and_the_backend_carries_on() {
    let dir = temp_dir("oversized");
    // One 3-byte frame, then a length prefix of 65551 with junk behind it.
    let prog = fake_passt(&dir, r"\000\000\000\003abc\000\001\000\017junkjunk");
    let mut p = spawn(&prog, &[]).unwrap();
    let mut buf = vec![0u8; MAX_FRAME];
    assert_eq!(recv_within(&mut p, &mut buf, Duration::from_secs(20)), Some(3));
    assert_eq!(&buf[..3], b"abc");
    // The bad prefix arrives with (or right after) the good frame.
    let start = Instant::now();
    while p.stream.is_some() && start.elapsed() < Duration::from_secs(20) {
        assert_eq!(p.recv(&mut buf).unwrap(), None);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(p.stream.is_none(), "the stream was not closed");
    // Link down, device up: sends are accepted (and dropped), nothing arrives, nothing stalls.
    assert!(p.tx_ready());
    p.send(b"lost frame").unwrap();
    assert_eq!(p.recv(&mut buf).unwrap(), None);
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_peer_that_stops_reading_stops_transmit_without_blocking() {
    let dir = temp_dir("stuck");
    let prog = fake_passt(&dir, "");
    let mut p = spawn(&prog, &[]).unwrap();
    let frame = vec![0x42u8; 1514];
    let mut n = 0;
    while p.tx_ready() {
        p.send(&frame).unwrap();
        n += 1;
        assert!(n < 100_000, "the queue never filled");
    }
    // The socket buffer plus our bounded queue: at least the queue, and never unbounded.
    assert!(n * 1518 >= OUT_QUEUE - MAX_FRAME, "only {n} frames queued");
    assert!(p.writer.has_room(0) && !p.writer.has_room(MAX_FRAME));
    drop(p);
    let _ = std::fs::remove_dir_all(dir);
}

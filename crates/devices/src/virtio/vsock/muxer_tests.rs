//! The host side of the protocol on real Unix sockets, driven with packets as the guest
//! would send them.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use super::*;

const CID: u64 = 3;

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(name: &str) -> (Dir, PathBuf, Muxer) {
    let dir = std::env::temp_dir().join(format!("hearth-vsock-mux-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let uds = dir.join("v.sock");
    let m = Muxer::new(&uds, CID).unwrap();
    (Dir(dir), uds, m)
}

fn guest(op: u16, host_port: u32, guest_port: u32, flags: u32, len: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: guest_port,
        dst_port: host_port,
        len,
        type_: TYPE_STREAM,
        op,
        flags,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

fn next(m: &mut Muxer) -> Option<(Header, Vec<u8>)> {
    let mut buf = vec![0u8; 4096];
    m.next_rx(4096, &mut buf).map(|(h, n)| (h, buf[..n].to_vec()))
}

/// hearth closed the socket without a word (closing with our bytes unread resets it).
fn assert_closed(c: &mut UnixStream) {
    let mut rest = Vec::new();
    match c.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{rest:?}"),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
    }
}

/// Events are edge-triggered and come through epoll: let the muxer look.
fn poll(m: &mut Muxer) {
    m.host_event(true);
}

#[test]
fn host_initiated_connection_relays_both_ways_and_closes() {
    let (_d, uds, mut m) = setup("host");
    let mut client = UnixStream::connect(&uds).unwrap();
    client.write_all(b"CONNECT 5000\nearly").unwrap();
    poll(&mut m);
    let (req, _) = next(&mut m).unwrap();
    assert_eq!(
        (req.op, req.dst_port, req.dst_cid, req.src_cid),
        (op::REQUEST, 5000, CID, HOST_CID)
    );
    assert!(req.src_port >= FIRST_EPHEMERAL);
    assert!(next(&mut m).is_none(), "no data before the guest answers");
    m.handle_guest(&guest(op::RESPONSE, req.src_port, 5000, 0, 0), &[]);
    let mut r = BufReader::new(client.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, format!("OK {}\n", req.src_port));
    // What the client sent after its line goes to the guest.
    let (rw, data) = next(&mut m).unwrap();
    assert_eq!(
        (rw.op, data.as_slice(), rw.buf_alloc),
        (op::RW, &b"early"[..], BUF_ALLOC)
    );
    // Guest → host.
    m.handle_guest(&guest(op::RW, req.src_port, 5000, 0, 3), b"abc");
    let mut got = [0u8; 3];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"abc");
    // The client half-closes: the guest is told it will get no more.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    poll(&mut m);
    let (sd, _) = next(&mut m).unwrap();
    assert_eq!((sd.op, sd.flags), (op::SHUTDOWN, shutdown::SEND));
    // The guest closes: RST back, client sees end of file.
    m.handle_guest(&guest(op::SHUTDOWN, req.src_port, 5000, shutdown::BOTH, 0), &[]);
    let (rst, _) = next(&mut m).unwrap();
    assert_eq!(rst.op, op::RST);
    assert_eq!(m.connection_count(), 0);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn refused_and_malformed_host_clients_are_closed() {
    let (_d, uds, mut m) = setup("refuse");
    let mut c = UnixStream::connect(&uds).unwrap();
    c.write_all(b"CONNECT 7\n").unwrap();
    poll(&mut m);
    let (req, _) = next(&mut m).unwrap();
    m.handle_guest(&guest(op::RST, req.src_port, 7, 0, 0), &[]);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "refused: closed without OK");
    for bad in [&b"HELLO\n"[..], b"CONNECT x\n", &[b'1'; 64]] {
        let mut c = UnixStream::connect(&uds).unwrap();
        c.write_all(bad).unwrap();
        poll(&mut m);
        assert_closed(&mut c);
    }
    assert!(next(&mut m).is_none(), "the guest heard of none of them");
    // No driver: clients are turned away.
    let mut c = UnixStream::connect(&uds).unwrap();
    c.write_all(b"CONNECT 7\n").unwrap();
    m.host_event(false);
    assert_closed(&mut c);
    assert!(next(&mut m).is_none());
}

#[test]
fn guest_initiated_connections_go_to_port_sockets_or_get_reset() {
    let (_d, uds, mut m) = setup("guest");
    m.handle_guest(&guest(op::REQUEST, 6001, 1111, 0, 0), &[]);
    let (rst, _) = next(&mut m).unwrap();
    assert_eq!((rst.op, rst.src_port, rst.dst_port), (op::RST, 6001, 1111));
    let l = UnixListener::bind(format!("{}_6000", uds.display())).unwrap();
    m.handle_guest(&guest(op::REQUEST, 6000, 1111, 0, 0), &[]);
    let (resp, _) = next(&mut m).unwrap();
    assert_eq!(resp.op, op::RESPONSE);
    let (mut s, _) = l.accept().unwrap();
    m.handle_guest(&guest(op::RW, 6000, 1111, 0, 4), b"ping");
    let mut got = [0u8; 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    // Host → guest is limited by the guest's credit (64 KiB here, 4 KiB per packet).
    s.write_all(&vec![1u8; 100 * 1024]).unwrap();
    poll(&mut m);
    let mut total = 0;
    while let Some((h, d)) = next(&mut m) {
        assert_eq!(h.op, op::RW);
        total += d.len();
    }
    assert_eq!(total, 64 * 1024);
    // The guest consumed it all and says so: the rest flows.
    let mut upd = guest(op::CREDIT_UPDATE, 6000, 1111, 0, 0);
    upd.fwd_cnt = 64 * 1024;
    m.handle_guest(&upd, &[]);
    while let Some((_, d)) = next(&mut m) {
        total += d.len();
    }
    assert_eq!(total, 100 * 1024);
    // A credit request is answered; a second REQUEST on a live connection resets it.
    m.handle_guest(&guest(op::CREDIT_REQUEST, 6000, 1111, 0, 0), &[]);
    assert_eq!(next(&mut m).unwrap().0.op, op::CREDIT_UPDATE);
    m.handle_guest(&guest(op::REQUEST, 6000, 1111, 0, 0), &[]);
    assert_eq!(next(&mut m).unwrap().0.op, op::RST);
    assert_eq!(m.connection_count(), 0);
}

#[test]
fn bad_guest_packets_are_dropped_or_reset() {
    let (_d, _uds, mut m) = setup("bad");
    // Wrong CIDs: dropped silently.
    let mut h = guest(op::REQUEST, 1, 2, 0, 0);
    h.src_cid = 9;
    m.handle_guest(&h, &[]);
    let mut h = guest(op::REQUEST, 1, 2, 0, 0);
    h.dst_cid = 1;
    m.handle_guest(&h, &[]);
    assert!(next(&mut m).is_none());
    // Wrong type, unknown op, data on no connection: RST.
    let mut h = guest(op::REQUEST, 1, 2, 0, 0);
    h.type_ = 2;
    m.handle_guest(&h, &[]);
    m.handle_guest(&guest(99, 1, 2, 0, 0), &[]);
    m.handle_guest(&guest(op::RW, 1, 2, 0, 1), b"x");
    for _ in 0..3 {
        assert_eq!(next(&mut m).unwrap().0.op, op::RST);
    }
    // An RST for nothing is not answered (no RST storms).
    m.handle_guest(&guest(op::RST, 1, 2, 0, 0), &[]);
    assert!(next(&mut m).is_none());
}

#[test]
fn a_flood_of_refused_requests_fills_the_control_queue_and_stops() {
    let (_d, _uds, mut m) = setup("flood");
    let mut n = 0u32;
    while !m.ctrl_full() {
        m.handle_guest(&guest(op::REQUEST, 9, n, 0, 0), &[]);
        n += 1;
    }
    assert_eq!(n as usize, MAX_CTRL);
    let mut drained = 0;
    while next(&mut m).is_some() {
        drained += 1;
    }
    assert_eq!(drained, MAX_CTRL);
}

#[test]
fn only_stale_sockets_are_replaced() {
    let (_d, uds, m) = setup("bind");
    drop(m);
    // The socket file is still there: a new device replaces it.
    assert!(uds.exists());
    let m = Muxer::new(&uds, CID).unwrap();
    drop(m);
    let file = uds.with_file_name("plain");
    std::fs::write(&file, b"keep me").unwrap();
    let e = Muxer::new(&file, CID).err().unwrap();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

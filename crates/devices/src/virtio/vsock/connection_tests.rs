//! The CONNECT line protocol and credit accounting, on real socket pairs.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use super::*;

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    (a, b)
}

#[test]
fn connect_lines() {
    assert_eq!(parse_connect_line(b"CONNECT 5000"), Some(5000));
    assert_eq!(parse_connect_line(b"CONNECT 0\r"), Some(0));
    assert_eq!(parse_connect_line(b"CONNECT 4294967295"), Some(u32::MAX));
    for bad in [
        &b"CONNECT 4294967296"[..],
        b"CONNECT",
        b"CONNECT ",
        b"connect 5",
        b"CONNECT -1",
        b"CONNECT +5",
        b"CONNECT 5 6",
        b"CONNECT  5",
        b"LISTEN 5",
        b"CONNECT \xff",
    ] {
        assert_eq!(parse_connect_line(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn the_line_is_consumed_and_what_follows_is_kept() {
    let (a, mut b) = pair();
    b.write_all(b"CONN").unwrap();
    assert_eq!(read_connect_line(&a).unwrap(), None);
    b.write_all(b"ECT 42\nhello").unwrap();
    assert_eq!(read_connect_line(&a).unwrap(), Some(42));
    let mut rest = [0u8; 5];
    (&a).read_exact(&mut rest).unwrap();
    assert_eq!(&rest, b"hello");
}

#[test]
fn bad_lines_and_early_close_are_errors() {
    let (a, mut b) = pair();
    b.write_all(&[b'C'; MAX_LINE]).unwrap();
    assert!(read_connect_line(&a).is_err(), "too long without a newline");
    let (a, mut b) = pair();
    b.write_all(b"HELLO\n").unwrap();
    assert!(read_connect_line(&a).is_err());
    let (a, b) = pair();
    assert_eq!(read_connect_line(&a).unwrap(), None, "nothing yet");
    drop(b);
    assert!(read_connect_line(&a).is_err(), "closed before the line");
}

#[test]
fn credit_toward_the_guest_wraps_and_never_goes_negative() {
    let (a, _b) = pair();
    let mut c = Connection::new(State::Established, a, 1);
    assert_eq!(c.peer_free(), 0, "nothing known about the guest yet");
    c.peer_credit(1000, 0);
    c.sent_to_guest(600);
    assert_eq!(c.peer_free(), 400);
    c.sent_to_guest(400);
    assert_eq!(c.peer_free(), 0);
    assert!(!c.can_send_to_guest());
    c.peer_credit(1000, 1000);
    assert_eq!(c.peer_free(), 1000);
    // Counters wrap at 2^32.
    let mut c = Connection::new(State::Established, pair().0, 1);
    c.sent_to_guest(u32::MAX - 9);
    c.peer_credit(100, u32::MAX - 19);
    c.sent_to_guest(30);
    assert_eq!(c.peer_free(), 60);
    // A guest lowering its buffer below what is in flight: zero, not a huge number.
    c.peer_credit(10, u32::MAX - 19);
    assert_eq!(c.peer_free(), 0);
    // A guest that shut down receiving gets nothing more.
    c.peer_credit(1000, 20);
    c.peer_shutdown = super::super::packet::shutdown::RCV;
    assert!(!c.can_send_to_guest());
}

#[test]
fn guest_data_is_buffered_up_to_the_credit_granted_and_no_more() {
    let (a, mut b) = pair();
    // A small socket buffer so the host side fills up.
    let mut c = Connection::new(State::Established, a, 1);
    let chunk = vec![7u8; 16 * 1024];
    let mut sent = 0usize;
    while sent + chunk.len() <= BUF_ALLOC as usize * 4 {
        match c.send_to_host(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
                break;
            }
        }
    }
    assert!(c.has_pending(), "the peer does not read: something must be pending");
    assert!(c.pending.len() <= BUF_ALLOC as usize);
    let (_, fwd) = c.credit_for_packet();
    assert_eq!(fwd as usize + c.pending.len(), sent, "forwarded + pending = received");
    // The host reads everything: a flush moves the rest and fwd_cnt catches up.
    b.set_nonblocking(true).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    loop {
        match b.read(&mut buf) {
            Ok(n) => got += n,
            Err(_) => {
                c.flush().unwrap();
                if !c.has_pending() {
                    while let Ok(n) = b.read(&mut buf) {
                        got += n;
                    }
                    break;
                }
            }
        }
    }
    assert_eq!(got, sent);
    assert!(c.wants_credit_update());
    let (alloc, fwd) = c.credit_for_packet();
    assert_eq!((alloc, fwd as usize), (BUF_ALLOC, sent));
    assert!(!c.wants_credit_update(), "the guest just heard of it");
}

#[test]
fn host_reads_report_would_block_and_end_of_file() {
    let (a, mut b) = pair();
    let mut c = Connection::new(State::Established, a, 1);
    let mut buf = [0u8; 8];
    assert_eq!(c.read_host(&mut buf).unwrap(), None);
    assert!(!c.readable);
    b.write_all(b"hi").unwrap();
    assert_eq!(c.read_host(&mut buf).unwrap(), Some(2));
    drop(b);
    assert_eq!(c.read_host(&mut buf).unwrap(), Some(0));
}

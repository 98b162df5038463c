//! The framing against real non-blocking Unix stream sockets.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use super::*;

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

fn framed(frame: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(frame.len()).unwrap().to_be_bytes().to_vec();
    v.extend_from_slice(frame);
    v
}

#[test]
fn partial_prefix_and_body_wait_for_the_rest() {
    let (mut ours, mut peer) = pair();
    let mut r = FrameReader::new();
    let mut out = vec![0u8; 2048];
    let bytes = framed(b"a frame in pieces");
    // One byte of the prefix at a time, then the body in two parts.
    for (i, b) in bytes[..4].iter().enumerate() {
        peer.write_all(&[*b]).unwrap();
        assert_eq!(
            r.next_frame(&mut ours, &mut out).unwrap(),
            None,
            "after {} prefix bytes",
            i + 1
        );
    }
    peer.write_all(&bytes[4..10]).unwrap();
    assert_eq!(r.next_frame(&mut ours, &mut out).unwrap(), None);
    peer.write_all(&bytes[10..]).unwrap();
    assert_eq!(r.next_frame(&mut ours, &mut out).unwrap(), Some(17));
    assert_eq!(&out[..17], b"a frame in pieces");
    assert_eq!(r.next_frame(&mut ours, &mut out).unwrap(), None);
}

#[test]
fn several_frames_in_one_read_and_zero_length_ones_skipped() {
    let (mut ours, mut peer) = pair();
    let mut all = framed(b"one");
    all.extend(framed(b""));
    all.extend(framed(b"two!"));
    all.extend(framed(b""));
    peer.write_all(&all).unwrap();
    let mut r = FrameReader::new();
    let mut out = vec![0u8; 64];
    assert_eq!(r.next_frame(&mut ours, &mut out).unwrap(), Some(3));
    assert_eq!(&out[..3], b"one");
    assert_eq!(r.next_frame(&mut ours, &mut out).unwrap(), Some(4));
    assert_eq!(&out[..4], b"two!");
    assert_eq!(r.next_frame(&mut ours, &mut out).unwrap(), None);
}

#[test]
fn frames_larger_than_the_buffer_are_skipped_not_fatal() {
    let (mut ours, mut peer) = pair();
    peer.write_all(&framed(&[9; 100])).unwrap();
    peer.write_all(&framed(b"small")).unwrap();
    let mut r = FrameReader::new();
    let mut out = vec![0u8; 64];
    assert_eq!(r.next_frame(&mut ours, &mut out).unwrap(), Some(5));
    assert_eq!(&out[..5], b"small");
    assert_eq!(r.skipped(), 1);
}

#[test]
fn the_largest_length_is_accepted_and_one_more_breaks_the_stream() {
    let (mut ours, peer) = pair();
    let mut r = FrameReader::new();
    let mut out = vec![0u8; MAX_STREAM_FRAME];
    let big = vec![0x5a; MAX_STREAM_FRAME];
    let bytes = framed(&big);
    // The socket buffer may take less than a whole frame at once: feed it from a thread.
    let mut blocking_peer = peer.try_clone().unwrap();
    blocking_peer.set_nonblocking(false).unwrap();
    let writer = std::thread::spawn(move || {
        blocking_peer.write_all(&bytes).unwrap();
        blocking_peer.write_all(&[0, 1, 0, 15]).unwrap(); // 65551
        blocking_peer.write_all(&[0; 16]).unwrap();
    });
    let mut got = None;
    while got.is_none() {
        got = r.next_frame(&mut ours, &mut out).unwrap();
    }
    assert_eq!(got, Some(MAX_STREAM_FRAME));
    assert!(out.iter().all(|&b| b == 0x5a));
    writer.join().unwrap();
    match r.next_frame(&mut ours, &mut out) {
        Err(StreamError::Oversized(65_551)) => {}
        other => panic!("expected an oversized-length error, got {other:?}"),
    }
    drop(peer);
}

#[test]
fn a_closed_peer_is_reported_after_the_last_frame() {
    let (mut ours, mut peer) = pair();
    peer.write_all(&framed(b"last")).unwrap();
    peer.write_all(&[0, 0]).unwrap(); // half a prefix, then the peer goes away
    drop(peer);
    let mut r = FrameReader::new();
    let mut out = vec![0u8; 64];
    assert_eq!(r.next_frame(&mut ours, &mut out).unwrap(), Some(4));
    assert!(matches!(r.next_frame(&mut ours, &mut out), Err(StreamError::Closed)));
}

#[test]
fn writer_is_bounded_keeps_unsent_bytes_and_frames_arrive_whole() {
    let (mut ours, mut peer) = pair();
    let cap = 256 * 1024;
    let mut w = FrameWriter::new(cap);
    assert!(!w.push(&vec![0; MAX_STREAM_FRAME + 1]), "longer than a frame");
    // Fill the socket until writes block, then the queue until it is full.
    let mut sent = Vec::new();
    let mut i = 0u32;
    loop {
        let frame: Vec<u8> = (0..1514u32)
            .map(|j| (i.wrapping_mul(31) ^ j).to_le_bytes()[0])
            .collect();
        if !w.push(&frame) {
            break;
        }
        sent.push(frame);
        w.flush(&mut ours).unwrap();
        i += 1;
    }
    assert!(!w.is_empty(), "the peer read nothing, so bytes must be queued");
    assert!(!w.has_room(1514));
    // The peer reads everything while we keep flushing; the frames come out identical.
    let mut r = FrameReader::new();
    let mut out = vec![0u8; 2048];
    let mut got = Vec::new();
    while got.len() < sent.len() {
        w.flush(&mut ours).unwrap();
        match r.next_frame(&mut peer, &mut out).unwrap() {
            Some(n) => got.push(out[..n].to_vec()),
            None => std::thread::yield_now(),
        }
    }
    assert!(w.is_empty());
    assert_eq!(got, sent);
    let mut rest = [0u8; 1];
    assert!(peer.read(&mut rest).is_err(), "no stray bytes");
}

#[test]
fn frames_straddling_the_read_buffer_end_survive_compaction() {
    let (mut ours, peer) = pair();
    let frames: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 30_000 + usize::from(i) * 1777]).collect();
    let mut stream = Vec::new();
    for f in &frames {
        stream.extend(framed(f));
    }
    let mut blocking_peer = peer.try_clone().unwrap();
    blocking_peer.set_nonblocking(false).unwrap();
    let writer = std::thread::spawn(move || {
        // Odd-sized writes so prefixes split across reads.
        for chunk in stream.chunks(9_973) {
            blocking_peer.write_all(chunk).unwrap();
        }
    });
    let mut r = FrameReader::new();
    let mut out = vec![0u8; MAX_STREAM_FRAME];
    for f in &frames {
        let n = loop {
            if let Some(n) = r.next_frame(&mut ours, &mut out).unwrap() {
                break n;
            }
            std::thread::yield_now();
        };
        assert_eq!(&out[..n], &f[..]);
    }
    writer.join().unwrap();
    drop(peer);
}

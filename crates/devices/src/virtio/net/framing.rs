//! Ethernet frames on a byte stream, as QEMU's stream netdev and passt exchange them: each frame
//! is preceded by its length as a 4-byte big-endian integer. The stream is non-blocking, so both
//! directions keep what they could not finish: [`FrameReader`] a partial frame until the rest
//! arrives, [`FrameWriter`] a bounded queue of bytes the peer has not taken yet.
//!
//! Pure buffering over `Read`/`Write`: what to do with a broken stream is the caller's choice.

use std::io::{self, Read, Write};

/// The largest length prefix accepted: a 65535-byte IP packet in an Ethernet frame with a VLAN
/// tag and some slack. A longer one means the stream is out of step (or the peer is broken);
/// nothing later on it can be trusted.
pub(crate) const MAX_STREAM_FRAME: usize = 65_550;
const PREFIX: usize = 4;
/// Room for a whole maximal frame plus what a read may bring beyond it.
const READ_BUF: usize = 2 * (PREFIX + MAX_STREAM_FRAME);

#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("the peer closed the stream")]
    Closed,
    #[error("frame length {0} exceeds {MAX_STREAM_FRAME}: the stream is out of step")]
    Oversized(usize),
    #[error("stream I/O failed")]
    Io(#[source] io::Error),
}

/// Splits a stream into frames.
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Frames that did not fit the caller's buffer and were skipped.
    skipped: u64,
}

impl FrameReader {
    pub(crate) fn new() -> Self {
        Self {
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            skipped: 0,
        }
    }

    /// Frames skipped so far because they were longer than the buffer passed to `next_frame`.
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The next complete frame, copied into `out`; `Ok(None)` when `src` has no more bytes for
    /// now (a partial frame stays buffered). Zero-length frames are skipped, as are frames
    /// longer than `out` (counted in [`FrameReader::skipped`]).
    pub(crate) fn next_frame(&mut self, src: &mut impl Read, out: &mut [u8]) -> Result<Option<usize>, StreamError> {
        loop {
            if let Some(len) = self.buffered_len()? {
                if self.end - self.start >= PREFIX + len {
                    let frame = self.start + PREFIX;
                    self.start = frame + len;
                    if len == 0 {
                        continue;
                    }
                    let Some(dst) = out.get_mut(..len) else {
                        self.skipped += 1;
                        continue;
                    };
                    dst.copy_from_slice(&self.buf[frame..frame + len]);
                    return Ok(Some(len));
                }
            }
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.buf.len() - self.end < PREFIX + MAX_STREAM_FRAME {
                // Move the partial frame to the front so the rest of it fits behind.
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            match src.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(StreamError::Closed),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StreamError::Io(e)),
            }
        }
    }

    /// The length prefix of the next frame, once all four bytes of it are here.
    fn buffered_len(&self) -> Result<Option<usize>, StreamError> {
        if self.end - self.start < PREFIX {
            return Ok(None);
        }
        let p = &self.buf[self.start..self.start + PREFIX];
        let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        match usize::try_from(len) {
            Ok(len) if len <= MAX_STREAM_FRAME => Ok(Some(len)),
            _ => Err(StreamError::Oversized(usize::try_from(len).unwrap_or(usize::MAX))),
        }
    }
}

/// Queues framed bytes for a stream, up to a fixed number of bytes.
pub(crate) struct FrameWriter {
    buf: Vec<u8>,
    cap: usize,
}

impl FrameWriter {
    /// A writer holding at most `cap` bytes (prefixes included) that the peer has not taken.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            buf: Vec::with_capacity(cap),
            cap,
        }
    }

    /// Whether a frame of `len` bytes fits in the queue now.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.buf.len() + PREFIX + len <= self.cap
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Queues `frame`; `false` (nothing queued) when it does not fit or is longer than a frame
    /// may be.
    pub(crate) fn push(&mut self, frame: &[u8]) -> bool {
        let Ok(len) = u32::try_from(frame.len()) else {
            return false;
        };
        if frame.len() > MAX_STREAM_FRAME || !self.has_room(frame.len()) {
            return false;
        }
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(frame);
        true
    }

    /// Writes queued bytes until the queue is empty or `dst` would block.
    pub(crate) fn flush(&mut self, dst: &mut impl Write) -> Result<(), StreamError> {
        while !self.buf.is_empty() {
            match dst.write(&self.buf) {
                Ok(0) => return Err(StreamError::Closed),
                Ok(n) => {
                    self.buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StreamError::Io(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;

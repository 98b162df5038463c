//! One vsock stream between a guest port and a host Unix socket: its state, the credit
//! accounting of both directions (virtio 1.2 §5.10.6.3), and the bytes from the guest that the
//! host socket has not taken yet (bounded by the credit hearth grants, [`BUF_ALLOC`]).
//!
//! Plain data plus the host socket, so the state can be persisted (or reset) by a snapshot.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use super::packet::shutdown;

/// The receive buffer hearth grants the guest per connection: the most guest bytes hearth
/// ever holds for one connection when the host peer does not read.
pub const BUF_ALLOC: u32 = 128 * 1024;
/// Send a credit update once this much was forwarded since the guest last heard of it.
const CREDIT_UPDATE_AFTER: u32 = BUF_ALLOC / 4;
/// The longest `CONNECT <port>\n` line accepted from a host client.
pub const MAX_LINE: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// hearth sent OP_REQUEST to the guest for a host client and waits for OP_RESPONSE.
    Connecting,
    Established,
}

/// Connections are keyed by the host-side port (the port on CID 2) and the guest's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub host_port: u32,
    pub guest_port: u32,
}

pub struct Connection {
    pub state: State,
    /// The connection's token in the muxer's epoll.
    pub token: u64,
    pub stream: UnixStream,
    /// The host socket may have bytes for the guest (an edge was seen and not drained).
    pub readable: bool,
    /// Guest bytes the host socket has not accepted yet; never more than [`BUF_ALLOC`].
    pending: VecDeque<u8>,
    /// Guest bytes written to the host socket (sent to the guest as fwd_cnt).
    fwd_cnt: u32,
    /// The fwd_cnt the guest last heard of.
    fwd_cnt_sent: u32,
    /// Bytes sent to the guest.
    rx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// OP_SHUTDOWN flags the guest sent so far.
    pub peer_shutdown: u32,
    /// The host socket reached end of file (the guest was sent OP_SHUTDOWN SEND).
    pub host_eof: bool,
    /// A credit update for this connection waits in the control queue.
    pub credit_update_queued: bool,
}

impl Connection {
    pub fn new(state: State, stream: UnixStream, token: u64) -> Self {
        Self {
            state,
            token,
            stream,
            readable: true,
            pending: VecDeque::new(),
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            rx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            peer_shutdown: 0,
            host_eof: false,
            credit_update_queued: false,
        }
    }

    /// Takes the credit fields of a guest packet.
    pub fn peer_credit(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = fwd_cnt;
    }

    /// How many bytes the guest can take now.
    pub fn peer_free(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// The credit fields for a packet to the guest: (buf_alloc, fwd_cnt). The guest hears of
    /// the current fwd_cnt with it.
    pub fn credit_for_packet(&mut self) -> (u32, u32) {
        self.fwd_cnt_sent = self.fwd_cnt;
        (BUF_ALLOC, self.fwd_cnt)
    }

    /// The guest should hear that space was freed.
    pub fn wants_credit_update(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent) >= CREDIT_UPDATE_AFTER
    }

    /// Counts `n` bytes sent to the guest.
    pub fn sent_to_guest(&mut self, n: u32) {
        self.rx_cnt = self.rx_cnt.wrapping_add(n);
    }

    /// Whether data can move host → guest now (what the guest can take, not whether the
    /// socket has any).
    pub fn can_send_to_guest(&self) -> bool {
        self.state == State::Established
            && self.readable
            && !self.host_eof
            && self.peer_shutdown & shutdown::RCV == 0
            && self.peer_free() > 0
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Guest data for the host socket: written at once as far as the socket takes it, the
    /// rest kept. `Err(InvalidData)` when the guest sent more than its credit allowed.
    pub fn send_to_host(&mut self, data: &[u8]) -> io::Result<()> {
        if self.pending.len() + data.len() > BUF_ALLOC as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "guest exceeded its credit"));
        }
        let mut written = 0;
        if self.pending.is_empty() {
            written = write_some(&mut self.stream, data)?;
            self.forwarded(written);
        }
        self.pending.extend(&data[written..]);
        Ok(())
    }

    /// Writes what is pending to the host socket (it became writable).
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            let (front, _) = self.pending.as_slices();
            let n = write_some(&mut self.stream, front)?;
            if n == 0 {
                break;
            }
            self.pending.drain(..n);
            self.forwarded(n);
        }
        Ok(())
    }

    fn forwarded(&mut self, n: usize) {
        self.fwd_cnt = self.fwd_cnt.wrapping_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Reads host bytes for the guest into `buf`: `Ok(None)` when the socket has none now.
    pub fn read_host(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.stream.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Reads the `CONNECT <port>\n` line without consuming what follows it. `Ok(None)`: not
/// complete yet; `Err`: malformed, too long, or the client went away.
pub fn read_connect_line(mut stream: &UnixStream) -> io::Result<Option<u32>> {
    let mut buf = [0u8; MAX_LINE];
    let n = peek(stream, &mut buf)?;
    let Some(n) = n else {
        return Ok(None);
    };
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before CONNECT"));
    }
    let Some(end) = buf[..n].iter().position(|&b| b == b'\n') else {
        if n == MAX_LINE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "CONNECT line too long"));
        }
        // The rest of the line comes with the next edge.
        return Ok(None);
    };
    let port = parse_connect_line(&buf[..end])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed CONNECT line"))?;
    let mut line = [0u8; MAX_LINE];
    stream.read_exact(&mut line[..=end])?;
    Ok(Some(port))
}

/// `CONNECT <port>` (without the newline; a trailing `\r` is tolerated) → the port.
pub fn parse_connect_line(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let port = line.strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

fn write_some(stream: &mut UnixStream, data: &[u8]) -> io::Result<usize> {
    if data.is_empty() {
        return Ok(0);
    }
    match stream.write(data) {
        Ok(n) => Ok(n),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(0),
        Err(e) => Err(e),
    }
}

fn peek(stream: &UnixStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    use std::os::fd::AsRawFd;
    // SAFETY: recv writes at most buf.len() bytes into `buf`, which we own; the fd is open.
    let r = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if r >= 0 {
        return Ok(Some(usize::try_from(r).unwrap_or(0)));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;

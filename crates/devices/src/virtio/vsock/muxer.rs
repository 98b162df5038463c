//! The host side of the vsock device, in Firecracker's hybrid scheme: one Unix socket `uds`
//! where host clients ask for a guest port (`CONNECT <port>\n` → `OK <host_port>\n`), and
//! `<uds>_<port>` sockets that guest connections to CID 2 port `<port>` are relayed to.
//!
//! The muxer owns every host socket in its own epoll (edge-triggered, so a socket whose data
//! the guest cannot take yet does not keep the event loop busy); the event loop watches that
//! one epoll fd. It turns guest packets into socket work ([`Muxer::handle_guest`]) and socket
//! work into packets for the guest ([`Muxer::next_rx`]). Memory is bounded: at most
//! [`MAX_CONNS`] connections, each holding at most `BUF_ALLOC` guest bytes; control packets
//! beyond [`MAX_CTRL`] make the device stop reading the guest's transmit queue.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Write};
use std::ops::Bound;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{read_connect_line, Connection, Key, State, BUF_ALLOC};
use super::packet::{op, shutdown, Header, HOST_CID, TYPE_STREAM};

/// The most connections (and host clients still sending their CONNECT line) at a time.
pub const MAX_CONNS: usize = 256;
/// Past this many queued control packets the device stops taking guest packets.
pub const MAX_CTRL: usize = 256;
const LISTENER: u64 = 0;
/// Ephemeral host ports for host-initiated connections start here.
const FIRST_EPHEMERAL: u32 = 1 << 30;

struct Ctrl {
    key: Key,
    op: u16,
    flags: u32,
}

pub struct Muxer {
    guest_cid: u64,
    uds: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    conns: BTreeMap<Key, Connection>,
    by_token: HashMap<u64, Key>,
    /// Host clients that have not sent their `CONNECT` line yet, by epoll token.
    clients: HashMap<u64, UnixStream>,
    ctrl: VecDeque<Ctrl>,
    next_token: u64,
    next_host_port: u32,
    /// Where the last data packet for the guest came from (round-robin between connections).
    last_rx: Option<Key>,
}

impl Muxer {
    /// Listens on `uds` (a stale socket file there is removed first; any other file is an
    /// error) for a device whose guest has CID `guest_cid`.
    pub fn new(uds: &Path, guest_cid: u64) -> io::Result<Self> {
        let listener = bind(uds)?;
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, LISTENER),
        )?;
        Ok(Self {
            guest_cid,
            uds: uds.to_path_buf(),
            listener,
            epoll,
            conns: BTreeMap::new(),
            by_token: HashMap::new(),
            clients: HashMap::new(),
            ctrl: VecDeque::new(),
            next_token: LISTENER + 1,
            next_host_port: FIRST_EPHEMERAL,
            last_rx: None,
        })
    }

    /// The fd the event loop watches: readable when any host socket has news.
    pub fn epoll_fd(&self) -> i32 {
        self.epoll.as_raw_fd()
    }

    /// Too many control packets wait for the guest: stop taking its packets until it posts
    /// receive buffers.
    pub fn ctrl_full(&self) -> bool {
        self.ctrl.len() >= MAX_CTRL
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Drops every connection (device reset): host sockets are closed.
    pub fn reset(&mut self) {
        self.conns.clear();
        self.by_token.clear();
        self.clients.clear();
        self.ctrl.clear();
        self.last_rx = None;
    }

    /// One packet from the guest (`payload` is its data for OP_RW).
    pub fn handle_guest(&mut self, h: &Header, payload: &[u8]) {
        let key = Key {
            host_port: h.dst_port,
            guest_port: h.src_port,
        };
        if h.src_cid != self.guest_cid || h.dst_cid != HOST_CID {
            ::virtio::guest_warn(format_args!(
                "vsock: packet from CID {} to CID {} dropped",
                h.src_cid, h.dst_cid
            ));
            return;
        }
        if h.type_ != TYPE_STREAM {
            if h.op != op::RST {
                self.push_ctrl(key, op::RST, 0);
            }
            return;
        }
        let Some(c) = self.conns.get_mut(&key) else {
            match h.op {
                op::REQUEST => self.guest_connect(key),
                op::RST => {}
                _ => self.push_ctrl(key, op::RST, 0),
            }
            return;
        };
        c.peer_credit(h.buf_alloc, h.fwd_cnt);
        match (h.op, c.state) {
            (op::RESPONSE, State::Connecting) => {
                let line = format!("OK {}\n", key.host_port);
                match c.stream.write_all(line.as_bytes()) {
                    Ok(()) => c.state = State::Established,
                    Err(_) => self.kill(key),
                }
            }
            (op::RST, _) => self.remove(key),
            (op::SHUTDOWN, _) => {
                c.peer_shutdown |= h.flags & shutdown::BOTH;
                self.after_guest_data(key);
            }
            (op::RW, State::Established) => match c.send_to_host(payload) {
                Ok(()) => self.after_guest_data(key),
                Err(_) => self.kill(key),
            },
            (op::CREDIT_UPDATE, _) => {}
            (op::CREDIT_REQUEST, _) => self.queue_credit_update(key),
            // A second REQUEST, a stray RESPONSE, data before the connection is up, an
            // unknown op: the connection is reset.
            _ => self.kill(key),
        }
    }

    /// A guest connect() to CID 2 port `key.host_port`: relayed to `<uds>_<port>`.
    fn guest_connect(&mut self, key: Key) {
        if key.guest_port == u32::MAX || self.conns.len() + self.clients.len() >= MAX_CONNS {
            self.push_ctrl(key, op::RST, 0);
            return;
        }
        let mut path = self.uds.clone().into_os_string();
        path.push(format!("_{}", key.host_port));
        let stream = match connect_nonblocking(Path::new(&path)) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("vsock: guest connect to {}: {e}", Path::new(&path).display());
                self.push_ctrl(key, op::RST, 0);
                return;
            }
        };
        match self.add_conn(key, Connection::new(State::Established, stream, 0)) {
            Ok(()) => self.push_ctrl(key, op::RESPONSE, 0),
            Err(_) => self.push_ctrl(key, op::RST, 0),
        }
    }

    fn add_conn(&mut self, key: Key, mut c: Connection) -> io::Result<()> {
        let token = self.token();
        watch(&self.epoll, &c.stream, token)?;
        c.token = token;
        self.by_token.insert(token, key);
        self.conns.insert(key, c);
        Ok(())
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// After guest data or a guest shutdown: tell the guest about freed space, pass a
    /// half-close on to the host socket, and end the connection once the guest shut down
    /// both ways and everything it sent reached the host socket.
    fn after_guest_data(&mut self, key: Key) {
        let Some(c) = self.conns.get_mut(&key) else { return };
        if c.has_pending() {
            return self.maybe_credit_update(key);
        }
        if c.peer_shutdown & shutdown::SEND != 0 {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
        }
        if c.peer_shutdown == shutdown::BOTH {
            return self.kill(key);
        }
        self.maybe_credit_update(key);
    }

    fn maybe_credit_update(&mut self, key: Key) {
        if self.conns.get(&key).is_some_and(Connection::wants_credit_update) {
            self.queue_credit_update(key);
        }
    }

    fn queue_credit_update(&mut self, key: Key) {
        if let Some(c) = self.conns.get_mut(&key) {
            if !c.credit_update_queued {
                c.credit_update_queued = true;
                self.push_ctrl(key, op::CREDIT_UPDATE, 0);
            }
        }
    }

    fn push_ctrl(&mut self, key: Key, op: u16, flags: u32) {
        self.ctrl.push_back(Ctrl { key, op, flags });
    }

    /// Ends a connection: the guest gets OP_RST, the host socket is closed.
    fn kill(&mut self, key: Key) {
        self.remove(key);
        self.push_ctrl(key, op::RST, 0);
    }

    fn remove(&mut self, key: Key) {
        if let Some(c) = self.conns.remove(&key) {
            self.by_token.remove(&c.token);
        }
    }

    /// The host side had news (the muxer's epoll fd is readable): accept clients, read their
    /// CONNECT lines, note readable sockets, write what waits for writable ones. `active`:
    /// whether a driver runs the device (if not, clients are turned away).
    pub fn host_event(&mut self, active: bool) {
        let mut events = [EpollEvent::default(); 32];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("vsock: epoll_wait: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                self.socket_event(ev.data(), ev.event_set(), active);
            }
            if n < events.len() {
                return;
            }
        }
    }

    fn socket_event(&mut self, token: u64, set: EventSet, active: bool) {
        if token == LISTENER {
            return self.accept_all(active);
        }
        if self.clients.contains_key(&token) {
            return self.client_line(token, active);
        }
        let Some(&key) = self.by_token.get(&token) else { return };
        let Some(c) = self.conns.get_mut(&key) else { return };
        if set.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR) {
            c.readable = true;
        }
        if c.has_pending() && set.intersects(EventSet::OUT | EventSet::HANG_UP | EventSet::ERROR) {
            match c.flush() {
                Ok(()) => self.after_guest_data(key),
                Err(_) => self.kill(key),
            }
        }
    }

    fn accept_all(&mut self, active: bool) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if self.conns.len() + self.clients.len() >= MAX_CONNS || stream.set_nonblocking(true).is_err() {
                log::debug!("vsock: host client turned away ({} connections)", self.conns.len());
                continue;
            }
            let token = self.token();
            if watch(&self.epoll, &stream, token).is_ok() {
                self.clients.insert(token, stream);
                // The line may be there already.
                self.client_line(token, active);
            }
        }
    }

    /// A host client sent (part of) its line: on `CONNECT <port>` ask the guest; a malformed
    /// line or an inactive device closes the client.
    fn client_line(&mut self, token: u64, active: bool) {
        let Some(stream) = self.clients.get(&token) else { return };
        match read_connect_line(stream) {
            Ok(None) => {}
            Ok(Some(port)) if active => {
                let Some(stream) = self.clients.remove(&token) else {
                    return;
                };
                let key = Key {
                    host_port: self.ephemeral_port(),
                    guest_port: port,
                };
                let mut c = Connection::new(State::Connecting, stream, token);
                c.readable = true;
                self.by_token.insert(token, key);
                self.conns.insert(key, c);
                self.push_ctrl(key, op::REQUEST, 0);
            }
            Ok(Some(_)) | Err(_) => {
                self.clients.remove(&token);
            }
        }
    }

    fn ephemeral_port(&mut self) -> u32 {
        loop {
            let p = self.next_host_port;
            self.next_host_port = if p >= u32::MAX - 1 { FIRST_EPHEMERAL } else { p + 1 };
            if !self.conns.keys().any(|k| k.host_port == p) {
                return p;
            }
        }
    }

    /// The next packet for the guest, for a receive buffer with `capacity` payload bytes: a
    /// control packet, or data read from a host socket into `buf` (returned length). `None`:
    /// nothing to send now.
    pub fn next_rx(&mut self, capacity: usize, buf: &mut [u8]) -> Option<(Header, usize)> {
        if let Some(c) = self.ctrl.pop_front() {
            return Some((self.header(c.key, c.op, c.flags), 0));
        }
        let ready = |(k, c): (&Key, &Connection)| c.can_send_to_guest().then_some(*k);
        let keys: Vec<Key> = match self.last_rx {
            Some(last) => self
                .conns
                .range((Bound::Excluded(last), Bound::Unbounded))
                .chain(self.conns.range(..=last))
                .filter_map(ready)
                .collect(),
            None => self.conns.iter().filter_map(ready).collect(),
        };
        for key in keys {
            if let Some(p) = self.read_for_guest(key, capacity, buf) {
                self.last_rx = Some(key);
                return Some(p);
            }
        }
        None
    }

    fn read_for_guest(&mut self, key: Key, capacity: usize, buf: &mut [u8]) -> Option<(Header, usize)> {
        let c = self.conns.get_mut(&key)?;
        let want = capacity
            .min(buf.len())
            .min(usize::try_from(c.peer_free()).unwrap_or(usize::MAX));
        match c.read_host(&mut buf[..want]) {
            Ok(None) => None,
            Ok(Some(0)) => {
                // The host client half-closed (or closed): the guest reads end of file.
                c.host_eof = true;
                Some((self.header(key, op::SHUTDOWN, shutdown::SEND), 0))
            }
            Ok(Some(n)) => {
                c.sent_to_guest(u32::try_from(n).unwrap_or(u32::MAX));
                Some((self.header(key, op::RW, 0), n))
            }
            Err(_) => {
                self.remove(key);
                Some((self.header(key, op::RST, 0), 0))
            }
        }
    }

    /// A packet header from the host side of `key`, carrying the connection's credit.
    fn header(&mut self, key: Key, op: u16, flags: u32) -> Header {
        let (buf_alloc, fwd_cnt) = match self.conns.get_mut(&key) {
            Some(c) => {
                if op == op::CREDIT_UPDATE {
                    c.credit_update_queued = false;
                }
                c.credit_for_packet()
            }
            None => (BUF_ALLOC, 0),
        };
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.host_port,
            dst_port: key.guest_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc,
            fwd_cnt,
        }
    }
}

/// Binds the host clients' socket, replacing a stale socket file but nothing else.
fn bind(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ))
        }
        Err(_) => {}
    }
    UnixListener::bind(path)
}

fn watch(epoll: &Epoll, stream: &UnixStream, token: u64) -> io::Result<()> {
    let set = EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
    epoll.ctl(ControlOperation::Add, stream.as_raw_fd(), EpollEvent::new(set, token))
}

/// connect(2) on a non-blocking Unix socket: a listener whose backlog is full refuses rather
/// than stalling the event loop.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "socket path too long"));
    }
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).unwrap_or(1);
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = libc::c_char::from_ne_bytes([*s]);
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns; the stream closes it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_un>()).unwrap_or(0);
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes that outlives the call.
    let r = unsafe { libc::connect(fd, std::ptr::addr_of!(addr).cast(), len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

#[cfg(test)]
#[path = "muxer_tests.rs"]
mod tests;

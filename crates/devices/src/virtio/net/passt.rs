//! The host side of a virtio-net device as a passt child process: user-mode NAT that needs no
//! root, no tap and no network namespace. passt turns the guest's Ethernet frames into ordinary
//! TCP/UDP/ICMP sockets of its own, answers ARP, DHCP, NDP and DHCPv6 itself, and forwards
//! chosen host ports into the guest (`-t`/`-u`).
//!
//! hearth starts `passt --foreground --fd N` with one end of a Unix socketpair as fd N (no socket
//! path, so nothing to race for or clean up) and exchanges length-prefixed frames on the other
//! end (see `framing`). passt ends with hearth three ways: it quits when its end of the
//! socketpair closes (`--fd` implies `--one-off`), the child gets SIGKILL when the hearth thread
//! that started it dies (PR_SET_PDEATHSIG, kept unless passt changes user, which it does only
//! when started as root), and dropping [`Passt`] kills and reaps it. Its stderr goes to hearth's
//! log (info level, prefixed `passt:`).

use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::device::Backend;
use super::framing::{FrameReader, FrameWriter, StreamError};
use super::handler::MAX_FRAME;

/// The guest's address, handed out by passt's DHCP server (or configured statically).
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The default gateway passt plays; TCP to it reaches the host's loopback (passt's gateway
/// mapping), so a guest reaches a host service on 127.0.0.1:P at 10.0.2.2:P.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const GUEST_PREFIX_LEN: u8 = 24;
/// Bytes of frames queued for passt before transmit stops taking the guest's chains.
const OUT_QUEUE: usize = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A host port forwarded to a guest port (passt's `-t`/`-u`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortForward {
    pub protocol: Protocol,
    /// The host address to bind; all addresses when `None`.
    pub host_addr: Option<Ipv4Addr>,
    pub host_port: u16,
    pub guest_port: u16,
}

impl PortForward {
    /// passt's option and its value for this forward.
    fn passt_args(&self) -> [String; 2] {
        let opt = match self.protocol {
            Protocol::Tcp => "--tcp-ports",
            Protocol::Udp => "--udp-ports",
        };
        let addr = self.host_addr.map(|a| format!("{a}/")).unwrap_or_default();
        [opt.to_string(), format!("{addr}{}:{}", self.host_port, self.guest_port)]
    }

    /// Binds the host port once, so that a port already in use is a clear error now rather than
    /// a forward passt silently leaves out.
    fn check_free(&self) -> io::Result<()> {
        let addr = (self.host_addr.unwrap_or(Ipv4Addr::UNSPECIFIED), self.host_port);
        match self.protocol {
            Protocol::Tcp => TcpListener::bind(addr).map(drop),
            Protocol::Udp => UdpSocket::bind(addr).map(drop),
        }
    }
}

impl std::fmt::Display for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        let addr = self.host_addr.map(|a| format!("{a}:")).unwrap_or_default();
        write!(f, "{proto}:{addr}{}-{}", self.host_port, self.guest_port)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    #[error("hostfwd={forward}: the host port is not free")]
    PortInUse {
        forward: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start '{program}' (Debian package: passt)")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the socket to passt")]
    Socket(#[source] io::Error),
}

pub struct Passt {
    /// `None` once the stream broke: the device keeps running, frames are dropped.
    stream: Option<UnixStream>,
    /// Watches `stream` edge-triggered for input and for room to write (see `Tap`).
    epoll: Epoll,
    reader: FrameReader,
    writer: FrameWriter,
    child: Child,
}

impl Passt {
    /// Starts `program` (normally "passt") forwarding `forwards` into the guest.
    pub fn spawn(program: &str, forwards: &[PortForward]) -> Result<Self, PasstError> {
        for fwd in forwards {
            fwd.check_free().map_err(|source| PasstError::PortInUse {
                forward: fwd.to_string(),
                source,
            })?;
        }
        let (ours, theirs) = UnixStream::pair().map_err(PasstError::Socket)?;
        ours.set_nonblocking(true).map_err(PasstError::Socket)?;
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(program);
        cmd.args(["--foreground", "--quiet", "--fd", &fd.to_string()])
            .args(["--address", &GUEST_IP.to_string()])
            .args(["--netmask", &GUEST_PREFIX_LEN.to_string()])
            .args(["--gateway", &GATEWAY_IP.to_string()])
            .args(forwards.iter().flat_map(PortForward::passt_args))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (prctl, getppid, fcntl) on values copied into it; it
        // allocates nothing (errors are built from raw OS codes).
        unsafe {
            cmd.pre_exec(move || child_setup(fd, parent));
        }
        let mut child = cmd.spawn().map_err(|source| PasstError::Spawn {
            program: program.to_string(),
            source,
        })?;
        drop(theirs);
        if let Some(stderr) = child.stderr.take() {
            // Ends by itself at EOF, when passt exits; never joined, so exit cannot hang on it.
            let _ = std::thread::Builder::new().name("passt-log".into()).spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    match line {
                        Ok(l) => log::info!("passt: {l}"),
                        Err(_) => break,
                    }
                }
            });
        }
        let epoll = Epoll::new().map_err(PasstError::Socket)?;
        epoll
            .ctl(
                ControlOperation::Add,
                ours.as_raw_fd(),
                EpollEvent::new(EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED, 0),
            )
            .map_err(PasstError::Socket)?;
        log::debug!("passt started (pid {})", child.id());
        Ok(Self {
            stream: Some(ours),
            epoll,
            reader: FrameReader::new(),
            writer: FrameWriter::new(OUT_QUEUE),
            child,
        })
    }

    /// Closes the stream after it broke; logged once, since the stream is gone afterwards.
    fn close(&mut self, e: &StreamError) {
        if self.stream.take().is_some() {
            log::warn!("virtio-net: the connection to passt is closed ({e}); the guest's network is down");
        }
    }

    fn flush(&mut self) {
        let Some(stream) = self.stream.as_mut() else { return };
        if let Err(e) = self.writer.flush(stream) {
            self.close(&e);
        }
    }
}

/// In the child, between fork and exec.
fn child_setup(fd: RawFd, parent: u32) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The parent may have died before the prctl: then no signal would ever come.
    // SAFETY: getppid has no preconditions.
    if u32::try_from(unsafe { libc::getppid() }).ok() != Some(parent) {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // passt inherits its end of the socketpair: clear close-on-exec on it.
    // SAFETY: F_SETFD on an fd this process owns; no memory is passed.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Backend for Passt {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        let skipped = self.reader.skipped();
        let r = self.reader.next_frame(stream, buf);
        if self.reader.skipped() != skipped {
            ::virtio::guest_warn(format_args!(
                "virtio-net: a frame from passt longer than {} bytes dropped",
                buf.len()
            ));
        }
        match r {
            Ok(n) => Ok(n),
            Err(e) => {
                self.close(&e);
                Ok(None)
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.stream.is_none() {
            return Ok(()); // the link is down: the frame is lost, as on a cable pulled out
        }
        if !self.writer.push(frame) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "passt's queue is full"));
        }
        self.flush();
        Ok(())
    }

    fn tx_ready(&self) -> bool {
        self.stream.is_none() || self.writer.has_room(MAX_FRAME)
    }

    fn event_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn ack_event(&mut self) {
        let mut ev = [EpollEvent::default(); 4];
        let _ = self.epoll.wait(0, &mut ev);
        if !self.writer.is_empty() {
            self.flush();
        }
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        // Closing our end already makes passt quit; kill in case it is stuck, then reap it.
        self.stream = None;
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => log::debug!("passt exited: {status}"),
            Err(e) => log::warn!("cannot reap passt (pid {}): {e}", self.child.id()),
        }
    }
}

#[cfg(test)]
#[path = "passt_tests.rs"]
mod tests;

//! The API server: a Unix-socket listener and its connections behind one epoll fd.
//!
//! The VMM's event loop watches [`ApiServer`]'s fd (an inner epoll holding the listener, every
//! connection and a timerfd) and calls [`ApiServer::poll`] when it is readable; `poll` handles
//! what is ready and returns without blocking. Inner fds are level-triggered, so the outer fd
//! stays readable while anything is left to do. Per-connection memory is bounded
//! ([`Limits`]); slow or stuck clients are closed by the timer, never waited for.

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use crate::conn::{Conn, Next};
use crate::http::write_fault;
use crate::{ApiFault, Backend};

const LISTENER: u64 = 0;
const TIMER: u64 = 1;
const FIRST_CONN: u64 = 2;
/// Connections accepted per `poll`, so a connect storm cannot starve the rest.
const ACCEPTS_PER_POLL: usize = 64;

/// Bounds on what one client can make hearth hold or wait for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request line + headers.
    pub max_head: usize,
    /// Request body (Firecracker's default payload limit is 51200 bytes).
    pub max_body: usize,
    /// Open connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// A request must arrive completely within this time of its first byte.
    pub request_timeout: Duration,
    /// A client with unread responses must read some within this time.
    pub write_timeout: Duration,
    /// Responses buffered per connection before hearth stops reading its requests.
    pub max_pending_output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8192,
            max_body: 51200,
            max_connections: 64,
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_pending_output: 64 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API socket {0}: a file that is not a socket is in the way")]
    NotASocket(PathBuf),
    #[error("API socket {path}: cannot bind")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("API socket: epoll/timerfd setup failed")]
    Setup(#[source] std::io::Error),
}

pub struct ApiServer {
    epoll: Epoll,
    listener: UnixListener,
    timer: TimerFd,
    path: PathBuf,
    conns: HashMap<u64, (Conn, EventSet)>,
    next_token: u64,
    limits: Limits,
}

impl ApiServer {
    /// Listens on `path` with the default [`Limits`]. A stale socket file is replaced; any
    /// other file there is an error.
    pub fn bind(path: &Path) -> Result<Self, ApiError> {
        Self::bind_with(path, Limits::default())
    }

    pub fn bind_with(path: &Path, limits: Limits) -> Result<Self, ApiError> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ApiError::NotASocket(path.to_path_buf()));
            }
            let _ = std::fs::remove_file(path);
        }
        let bind_err = |source| ApiError::Bind {
            path: path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let epoll = Epoll::new().map_err(ApiError::Setup)?;
        let timer = TimerFd::new().map_err(|e| ApiError::Setup(e.into()))?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, LISTENER),
            )
            .map_err(ApiError::Setup)?;
        epoll
            .ctl(
                ControlOperation::Add,
                timer.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TIMER),
            )
            .map_err(ApiError::Setup)?;
        Ok(ApiServer {
            epoll,
            listener,
            timer,
            path: path.to_path_buf(),
            conns: HashMap::new(),
            next_token: FIRST_CONN,
            limits,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Handles everything ready now (new clients, requests, writable clients, timeouts),
    /// calling `backend` once per complete request. Never blocks.
    pub fn poll(&mut self, backend: &mut dyn Backend) {
        let mut events = [EpollEvent::default(); 64];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("API server: epoll_wait failed: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    LISTENER => self.accept(),
                    TIMER => {
                        // Readable, so this read does not block; the count does not matter.
                        let _ = self.timer.wait();
                        self.expire(Instant::now());
                    }
                    token => self.on_conn(token, ev.event_set(), backend),
                }
            }
            if n < events.len() {
                break;
            }
        }
        self.arm_timer(Instant::now());
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_POLL {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("API server: accept failed: {e}");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if self.conns.len() >= self.limits.max_connections {
                let mut out = Vec::new();
                let msg = format!("too many API connections (limit {}).", self.limits.max_connections);
                write_fault(&mut out, &ApiFault::new(503, msg), true);
                let _ = (&stream).write(&out);
                continue;
            }
            let token = self.next_token;
            self.next_token += 1;
            let conn = Conn::new(stream);
            let interest = EventSet::IN;
            let ev = EpollEvent::new(interest, token);
            if self
                .epoll
                .ctl(ControlOperation::Add, conn.stream.as_raw_fd(), ev)
                .is_ok()
            {
                self.conns.insert(token, (conn, interest));
            }
        }
    }

    fn on_conn(&mut self, token: u64, events: EventSet, backend: &mut dyn Backend) {
        let Some((conn, _)) = self.conns.get_mut(&token) else {
            return;
        };
        let next = if events.intersects(EventSet::ERROR | EventSet::HANG_UP) {
            Next::Close
        } else {
            conn.on_ready(events.contains(EventSet::IN), backend, &self.limits, Instant::now())
        };
        match next {
            Next::Close => self.close(token),
            Next::Keep => self.update_interest(token),
        }
    }

    fn update_interest(&mut self, token: u64) {
        let Some((conn, current)) = self.conns.get_mut(&token) else {
            return;
        };
        let mut want = EventSet::empty();
        if conn.wants_read(&self.limits) {
            want |= EventSet::IN;
        }
        if conn.wants_write() {
            want |= EventSet::OUT;
        }
        if want != *current {
            let ev = EpollEvent::new(want, token);
            if self
                .epoll
                .ctl(ControlOperation::Modify, conn.stream.as_raw_fd(), ev)
                .is_err()
            {
                self.close(token);
                return;
            }
            *current = want;
        }
    }

    fn close(&mut self, token: u64) {
        if let Some((conn, _)) = self.conns.remove(&token) {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, conn.stream.as_raw_fd(), EpollEvent::default());
        }
    }

    /// Closes connections whose request or whose unread output has outlived its limit.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, (c, _))| c.deadline(&self.limits).is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            if let Some((conn, _)) = self.conns.get_mut(&token) {
                conn.say_goodbye(408, "request not completed in time; closing the connection.");
            }
            self.close(token);
        }
    }

    /// Arms the timer for the earliest connection deadline (or disarms it).
    fn arm_timer(&mut self, now: Instant) {
        let next = self.conns.values().filter_map(|(c, _)| c.deadline(&self.limits)).min();
        let result = match next {
            // A zero duration would disarm the timer: fire after at least 1 ms.
            Some(d) => self
                .timer
                .reset(d.saturating_duration_since(now).max(Duration::from_millis(1)), None),
            None => self.timer.clear(),
        };
        if let Err(e) = result {
            log::error!("API server: timerfd: {e}");
        }
    }
}

impl AsRawFd for ApiServer {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

//! One API client connection: bounded input and output buffers, pipelined requests answered in
//! order, and the two clocks the server's timer enforces (a request that is taking too long to
//! arrive; output the client is not reading).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use crate::http::{parse_head, write_fault, write_response, CONTINUE};
use crate::server::Limits;
use crate::{router, ApiReply, Backend};

pub(crate) struct Conn {
    pub stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Since when a request has been incomplete in `inbuf` (slowloris clock).
    partial_since: Option<Instant>,
    /// Since when output has been pending without the client reading any of it.
    stalled_since: Option<Instant>,
    /// Stop reading; close once `out` is flushed.
    closing: bool,
    continue_sent: bool,
}

/// What the server should do with a connection after an event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    Keep,
    Close,
}

impl Conn {
    pub fn new(stream: UnixStream) -> Self {
        Conn {
            stream,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            partial_since: None,
            stalled_since: None,
            closing: false,
            continue_sent: false,
        }
    }

    fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Whether the server should watch this connection for input (else output only).
    pub fn wants_read(&self, limits: &Limits) -> bool {
        !self.closing && self.pending_out() < limits.max_pending_output
    }

    pub fn wants_write(&self) -> bool {
        self.pending_out() > 0
    }

    /// The earliest instant at which this connection times out, if any.
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let a = self.partial_since.map(|t| t + limits.request_timeout);
        let b = self.stalled_since.map(|t| t + limits.write_timeout);
        a.into_iter().chain(b).min()
    }

    /// Handles readiness: reads what fits, answers complete requests, writes what it can.
    pub fn on_ready(&mut self, readable: bool, backend: &mut dyn Backend, limits: &Limits, now: Instant) -> Next {
        if readable && self.wants_read(limits) && self.read(limits) == Next::Close {
            return Next::Close;
        }
        loop {
            let held_back = self.process(backend, limits, now);
            if self.flush(now) == Next::Close {
                return Next::Close;
            }
            // Requests set aside for a full output buffer: the client has just taken the
            // output, and no new input may ever come to wake us, so go on now.
            if !held_back || self.pending_out() >= limits.max_pending_output {
                break;
            }
        }
        if self.closing && self.pending_out() == 0 {
            return Next::Close;
        }
        Next::Keep
    }

    /// Reads until the socket would block or `inbuf` holds the largest possible request.
    fn read(&mut self, limits: &Limits) -> Next {
        let cap = limits.max_head + limits.max_body;
        let mut chunk = [0u8; 4096];
        while self.inbuf.len() < cap {
            let want = chunk.len().min(cap - self.inbuf.len());
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => {
                    // The client shut down its side: answer what it sent, then close. A
                    // trailing partial request will never complete.
                    self.closing = true;
                    self.partial_since = None;
                    return Next::Keep;
                }
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Next::Close,
            }
        }
        Next::Keep
    }

    /// Answers every complete request in `inbuf`, in order, while output has room. Returns
    /// whether it stopped with input left because output was full.
    fn process(&mut self, backend: &mut dyn Backend, limits: &Limits, now: Instant) -> bool {
        let mut waiting = false;
        loop {
            if self.inbuf.is_empty() {
                break;
            }
            if self.pending_out() >= limits.max_pending_output {
                return true;
            }
            let head = match parse_head(&self.inbuf, limits.max_head, limits.max_body) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    waiting = true;
                    break;
                }
                Err(fault) => {
                    write_fault(&mut self.out, &fault, true);
                    self.inbuf.clear();
                    self.closing = true;
                    break;
                }
            };
            let total = head.head_len + head.content_length;
            if self.inbuf.len() < total {
                if head.expect_continue && !self.continue_sent && !self.closing {
                    self.out.extend_from_slice(CONTINUE);
                    self.continue_sent = true;
                }
                waiting = true;
                break;
            }
            let body = (head.content_length > 0).then(|| &self.inbuf[head.head_len..total]);
            let result = router::route(&head.method, &head.path, body).and_then(|r| backend.handle(r));
            match result {
                Ok(ApiReply::NoContent) => write_response(&mut self.out, 204, "", b"", head.close),
                Ok(ApiReply::Json(v)) => write_response(
                    &mut self.out,
                    200,
                    "application/json",
                    v.to_string().as_bytes(),
                    head.close,
                ),
                Ok(ApiReply::Text(t)) => write_response(
                    &mut self.out,
                    200,
                    "text/plain; charset=utf-8",
                    t.as_bytes(),
                    head.close,
                ),
                Err(fault) => write_fault(&mut self.out, &fault, head.close),
            }
            self.inbuf.drain(..total);
            self.continue_sent = false;
            self.partial_since = None;
            if head.close {
                self.closing = true;
                self.inbuf.clear();
            }
        }
        if waiting && !self.closing {
            self.partial_since.get_or_insert(now);
        } else if self.inbuf.is_empty() || self.closing {
            self.partial_since = None;
        }
        false
    }

    /// Writes pending output until the socket would block.
    fn flush(&mut self, now: Instant) -> Next {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    self.out_pos += n;
                    self.stalled_since = None;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.stalled_since.get_or_insert(now);
                    return Next::Keep;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Next::Close,
            }
        }
        self.out.clear();
        self.out_pos = 0;
        self.stalled_since = None;
        Next::Keep
    }

    /// Best-effort last words before the server drops a connection that timed out.
    pub fn say_goodbye(&mut self, status: u16, message: &str) {
        if self.pending_out() == 0 {
            let mut out = Vec::new();
            write_fault(&mut out, &crate::ApiFault::new(status, message), true);
            let _ = self.stream.write(&out);
        }
    }
}

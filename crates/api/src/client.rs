//! A small blocking HTTP/1.1 client for the API socket, used by `hearth ctl` and the tests.
//! One connection, keep-alive, responses read in order (so pipelining works too).

use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Largest response head or body the client accepts.
const MAX_RESPONSE: usize = 16 << 20;

pub struct ApiClient {
    stream: UnixStream,
    buf: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
    /// The server said `Connection: close`.
    pub close: bool,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `fault_message` of an error body, if it is one.
    pub fn fault_message(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v.get("fault_message")?.as_str().map(str::to_string)
    }

    /// The body as JSON (`Null` when empty).
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        if self.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&self.body)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg)
}

impl ApiClient {
    pub fn connect(path: &Path) -> io::Result<Self> {
        Ok(ApiClient {
            stream: UnixStream::connect(path)?,
            buf: Vec::new(),
        })
    }

    /// Bounds every read and write (None: wait forever).
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(t)?;
        self.stream.set_write_timeout(t)
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The bytes of one request (for tests that pipeline or split requests).
    pub fn encode(method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        req.into_bytes()
    }

    /// Sends one request and reads its response.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> io::Result<Response> {
        self.send_raw(&Self::encode(method, path, body))?;
        self.read_response()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads the next final response (skipping `100 Continue`).
    pub fn read_response(&mut self) -> io::Result<Response> {
        loop {
            let r = self.read_one()?;
            if r.status != 100 {
                return Ok(r);
            }
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the API server closed the connection",
            ));
        }
        if self.buf.len() + n > MAX_RESPONSE {
            return Err(invalid("API response too large".into()));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn read_one(&mut self) -> io::Result<Response> {
        let (head_len, status, content_type, length, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut ct = None;
                    let mut len = 0usize;
                    let mut close = false;
                    for h in resp.headers.iter() {
                        let v = String::from_utf8_lossy(h.value).trim().to_string();
                        if h.name.eq_ignore_ascii_case("content-length") {
                            len = v.parse().map_err(|_| invalid(format!("bad Content-Length '{v}'")))?;
                        } else if h.name.eq_ignore_ascii_case("content-type") {
                            ct = Some(v);
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = v.eq_ignore_ascii_case("close");
                        }
                    }
                    break (n, resp.code.unwrap_or(0), ct, len, close);
                }
                Ok(httparse::Status::Partial) => self.fill()?,
                Err(e) => return Err(invalid(format!("malformed API response: {e}"))),
            }
        };
        if length > MAX_RESPONSE {
            return Err(invalid("API response too large".into()));
        }
        while self.buf.len() < head_len + length {
            self.fill()?;
        }
        let body = String::from_utf8_lossy(&self.buf[head_len..head_len + length]).into_owned();
        self.buf.drain(..head_len + length);
        Ok(Response {
            status,
            content_type,
            body,
            close,
        })
    }
}

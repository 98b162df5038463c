//! HTTP/1.1 framing for the API: request heads (parsed with `httparse`), Content-Length
//! bodies, and responses. No chunked transfer encoding (Firecracker's clients never send it);
//! every error here is a [`ApiFault`] after which the server closes the connection, because the
//! request's framing can no longer be trusted.

use crate::ApiFault;

/// Most headers a request may carry.
const MAX_HEADERS: usize = 32;

/// A complete request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub path: String,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    pub content_length: usize,
    /// The client asked for (or, with HTTP/1.0, implied) `Connection: close`.
    pub close: bool,
    /// `Expect: 100-continue`: the client waits for a `100 Continue` before the body.
    pub expect_continue: bool,
}

/// Parses the head at the start of `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_head(buf: &[u8], max_head: usize, max_body: usize) -> Result<Option<Head>, ApiFault> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Partial) if buf.len() <= max_head => return Ok(None),
        Ok(_) => return Err(head_too_large(max_head)),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ApiFault::new(431, format!("more than {MAX_HEADERS} request headers.")))
        }
        Err(e) => return Err(ApiFault::bad_request(format!("malformed HTTP request: {e}."))),
    };
    let mut head = Head {
        method: req.method.unwrap_or("").to_string(),
        path: req.path.unwrap_or("").to_string(),
        head_len,
        content_length: 0,
        close: req.version == Some(0),
        expect_continue: false,
    };
    let mut length: Option<usize> = None;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| ApiFault::bad_request(format!("invalid Content-Length '{}'.", value.escape_debug())))?;
            if length.is_some_and(|l| l != n) {
                return Err(ApiFault::bad_request("conflicting Content-Length headers."));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ApiFault::new(
                501,
                format!(
                    "Transfer-Encoding '{}' is not supported: send the body with Content-Length.",
                    value.escape_debug()
                ),
            ));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    head.close = false;
                }
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return Err(ApiFault::new(
                    417,
                    format!("unsupported Expect '{}'.", value.escape_debug()),
                ));
            }
            head.expect_continue = true;
        }
    }
    head.content_length = length.unwrap_or(0);
    if head.content_length > max_body {
        return Err(ApiFault::new(
            413,
            format!(
                "Request payload with size {} is larger than the limit of {max_body} allowed by server.",
                head.content_length
            ),
        ));
    }
    Ok(Some(head))
}

fn head_too_large(max: usize) -> ApiFault {
    ApiFault::new(431, format!("request head is larger than {max} bytes."))
}

/// The reason phrase of the statuses hearth sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends one response to `out`. 204 carries no body and no Content-Length (RFC 9110 §8.6).
pub fn write_response(out: &mut Vec<u8>, status: u16, content_type: &str, body: &[u8], close: bool) {
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\nServer: hearth\r\n", reason(status)).as_bytes());
    if status != 204 {
        out.extend_from_slice(format!("Content-Type: {content_type}\r\nContent-Length: {}\r\n", body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if status != 204 {
        out.extend_from_slice(body);
    }
}

/// Appends a `{"fault_message": ...}` response.
pub fn write_fault(out: &mut Vec<u8>, fault: &ApiFault, close: bool) {
    write_response(out, fault.status, "application/json", fault.body().as_bytes(), close);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Option<Head>, ApiFault> {
        parse_head(s.as_bytes(), 8192, 51200)
    }

    #[test]
    fn heads() {
        let h = head("PUT /drives/a HTTP/1.1\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n{")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.method.as_str(), h.path.as_str(), h.content_length),
            ("PUT", "/drives/a", 12)
        );
        assert!(h.expect_continue && !h.close);
        assert_eq!(h.head_len, 68);
        assert!(head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().close);
        assert!(
            !head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .unwrap()
                .close
        );
        assert!(
            head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap()
                .close
        );
        assert_eq!(head("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
    }

    #[test]
    fn bad_heads() {
        let status = |s: &str| head(s).unwrap_err().status;
        assert_eq!(status("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), 501);
        assert_eq!(status("PUT / HTTP/1.1\r\nContent-Length: 51201\r\n\r\n"), 413);
        assert_eq!(status("PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(
            status("PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(status("GET / HTTP/1.1\r\nExpect: magic\r\n\r\n"), 417);
        assert_eq!(status("GET /\x01 HTTP/1.1\r\n\r\n"), 400);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(status(&big), 431);
        let many: String = (0..40).map(|i| format!("X{i}: y\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        write_response(&mut out, 204, "application/json", b"", false);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nServer: hearth\r\n\r\n");
        out.clear();
        write_fault(&mut out, &ApiFault::bad_request("no \"x\""), true);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{s}");
        assert!(
            s.contains("Content-Length: 28\r\nConnection: close\r\n\r\n{\"fault_message\":\"no \\\"x\\\"\"}"),
            "{s}"
        );
    }
}

//! The API server over a real Unix socket: every route end to end with responses checked
//! against hearth-api.yaml, and hostile clients (bad bodies, huge bodies, slowloris, 100
//! parallel clients, pipelining, a client that never reads) while others keep being served.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use api::client::{ApiClient, Response};
use api::{ApiRequest, ApiServer, Limits};
use common::schema::Spec;
use common::{TempDir, TestServer};
use serde_json::json;

fn quick_limits() -> Limits {
    Limits {
        request_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(300),
        ..Limits::default()
    }
}

/// The response matches what hearth-api.yaml says METHOD path answers with that status.
fn check_against_spec(spec: &Spec, method: &str, template: &str, r: &Response) {
    if r.status == 204 {
        assert!(r.body.is_empty(), "{method} {template}: 204 with a body");
        return;
    }
    let Some(schema) = spec.response_schema(method, template, r.status) else {
        panic!("{method} {template}: the spec has no schema for {}", r.status);
    };
    let value = if r.content_type.as_deref().is_some_and(|c| c.starts_with("text/plain")) {
        serde_json::Value::String(r.body.clone())
    } else {
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/json"),
            "{method} {template}"
        );
        r.json()
            .unwrap_or_else(|e| panic!("{method} {template}: body is not JSON: {e}"))
    };
    let errors = spec.check(&value, schema);
    assert!(
        errors.is_empty(),
        "{method} {template} {}: {value} {errors:?}",
        r.status
    );
}

#[test]
fn every_route_end_to_end() {
    let server = TestServer::start(Limits::default());
    let spec = Spec::hearth();
    let mut c = server.client();
    let calls: &[(&str, &str, &str, Option<serde_json::Value>, u16)] = &[
        ("GET", "/", "/", None, 200),
        ("GET", "/version", "/version", None, 200),
        ("GET", "/machine-config", "/machine-config", None, 200),
        (
            "PUT",
            "/machine-config",
            "/machine-config",
            Some(json!({"vcpu_count": 2, "mem_size_mib": 256})),
            204,
        ),
        (
            "PATCH",
            "/machine-config",
            "/machine-config",
            Some(json!({"mem_size_mib": 512})),
            204,
        ),
        (
            "PUT",
            "/boot-source",
            "/boot-source",
            Some(json!({"kernel_image_path": "/k", "boot_args": "console=ttyS0"})),
            204,
        ),
        (
            "PUT",
            "/cpu-config",
            "/cpu-config",
            Some(json!({"kvm_capabilities": ["171"]})),
            204,
        ),
        (
            "PUT",
            "/drives/root",
            "/drives/{drive_id}",
            Some(json!({"drive_id": "root", "path_on_host": "/r", "is_root_device": true, "is_read_only": false})),
            204,
        ),
        (
            "PATCH",
            "/drives/root",
            "/drives/{drive_id}",
            Some(json!({"drive_id": "root", "path_on_host": "/r2"})),
            204,
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            "/network-interfaces/{iface_id}",
            Some(json!({"iface_id": "eth0", "host_dev_name": "tap0"})),
            204,
        ),
        (
            "PATCH",
            "/network-interfaces/eth0",
            "/network-interfaces/{iface_id}",
            Some(json!({"iface_id": "eth0"})),
            204,
        ),
        (
            "PUT",
            "/vsock",
            "/vsock",
            Some(json!({"guest_cid": 3, "uds_path": "/v.sock"})),
            204,
        ),
        ("PUT", "/entropy", "/entropy", Some(json!({})), 204),
        ("PUT", "/serial", "/serial", Some(json!({"serial_out_path": "/s"})), 204),
        (
            "PUT",
            "/balloon",
            "/balloon",
            Some(json!({"amount_mib": 64, "deflate_on_oom": true})),
            204,
        ),
        ("PATCH", "/balloon", "/balloon", Some(json!({"amount_mib": 32})), 204),
        ("GET", "/balloon", "/balloon", None, 200),
        ("GET", "/balloon/statistics", "/balloon/statistics", None, 200),
        (
            "PATCH",
            "/balloon/statistics",
            "/balloon/statistics",
            Some(json!({"stats_polling_interval_s": 2})),
            204,
        ),
        ("PUT", "/logger", "/logger", Some(json!({"level": "Info"})), 204),
        ("PUT", "/metrics", "/metrics", Some(json!({"metrics_path": "/m"})), 204),
        (
            "PUT",
            "/actions",
            "/actions",
            Some(json!({"action_type": "SendCtrlAltDel"})),
            204,
        ),
        ("PATCH", "/vm", "/vm", Some(json!({"state": "Paused"})), 204),
        ("GET", "/vm/config", "/vm/config", None, 200),
        (
            "PUT",
            "/snapshot/create",
            "/snapshot/create",
            Some(json!({"snapshot_path": "/s", "mem_file_path": "/m"})),
            204,
        ),
        (
            "PUT",
            "/snapshot/load",
            "/snapshot/load",
            Some(json!({"snapshot_path": "/s", "mem_file_path": "/m"})),
            400,
        ),
        ("PUT", "/mmds", "/mmds", Some(json!({"latest": {}})), 204),
        ("PATCH", "/mmds", "/mmds", Some(json!({"latest": {"a": 1}})), 204),
        ("GET", "/mmds", "/mmds", None, 200),
        (
            "PUT",
            "/mmds/config",
            "/mmds/config",
            Some(json!({"network_interfaces": ["eth0"]})),
            204,
        ),
        ("GET", "/metrics/prometheus", "/metrics/prometheus", None, 200),
        ("GET", "/hearth/exit-stats", "/hearth/exit-stats", None, 200),
        // Faults: the spec's Error schema.
        (
            "PUT",
            "/drives/other",
            "/drives/{drive_id}",
            Some(json!({"drive_id": "root", "path_on_host": "/r", "is_root_device": true})),
            400,
        ),
        (
            "PUT",
            "/machine-config",
            "/machine-config",
            Some(json!({"vcpu_count": 1, "mem_size_mib": 1, "bogus": 1})),
            400,
        ),
    ];
    let mut routed = std::collections::BTreeSet::new();
    for (method, path, template, body, status) in calls {
        let b = body.as_ref().map(|b| b.to_string());
        let r = c.request(method, path, b.as_deref()).unwrap();
        assert_eq!(r.status, *status, "{method} {path}: {r:?}");
        check_against_spec(&spec, method, template, &r);
        routed.insert((method.to_string(), template.to_string()));
    }
    // Every route was exercised, each success reached the backend exactly once, typed.
    let all: std::collections::BTreeSet<_> = api::router::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(routed, all);
    let recorded = server.calls.lock().unwrap().clone();
    assert_eq!(
        recorded.len(),
        calls.len() - 2,
        "the two bad requests never reach the backend"
    );
    assert!(recorded.contains(&ApiRequest::PatchVm(api::models::vm::Vm {
        state: api::models::vm::VmState::Paused
    })));
    assert!(matches!(&recorded[3], ApiRequest::PutMachineConfig(m) if m.vcpu_count == 2 && m.mem_size_mib == 256));
    let r = c.request("GET", "/metrics/prometheus", None).unwrap();
    assert_eq!(
        (r.content_type.as_deref(), r.body.as_str()),
        (Some("text/plain; charset=utf-8"), "hearth_up 1\n")
    );
}

#[test]
fn bad_bodies_get_400_and_the_connection_stays_usable() {
    let server = TestServer::start(Limits::default());
    let mut c = server.client();
    for (body, needle) in [
        ("{\"vcpu_count\": 1, ", "EOF while parsing"),
        (
            "{\"vcpu_count\": true, \"mem_size_mib\": 1}",
            "vcpu_count: invalid type: boolean",
        ),
        (
            "{\"vcpu_count\": 1, \"mem_size_mib\": 1, \"x\": 0}",
            "unknown field `x`",
        ),
        ("{\"mem_size_mib\": 1}", "missing field `vcpu_count`"),
        (
            "{\"vcpu_count\": 99999, \"mem_size_mib\": 1}",
            "vcpu_count: invalid value",
        ),
    ] {
        let r = c.request("PUT", "/machine-config", Some(body)).unwrap();
        assert_eq!(r.status, 400, "{body}");
        let m = r.fault_message().unwrap();
        assert!(m.contains(needle), "{body}: {m}");
        assert!(!r.close);
    }
    let r = c.request("GET", "/nowhere", None).unwrap();
    assert_eq!(
        r.fault_message().unwrap(),
        "Invalid request method and/or path: GET nowhere."
    );
    let r = c.request("GET", "/", Some("{}")).unwrap();
    assert_eq!(r.fault_message().unwrap(), "GET request cannot have a body.");
    let r = c.request("PUT", "/actions", None).unwrap();
    assert_eq!(r.fault_message().unwrap(), "Empty PUT request.");
    assert_eq!(c.request("GET", "/version", None).unwrap().status, 200);
    assert_eq!(server.call_count(), 1, "only the last request was valid");
}

#[test]
fn framing_errors_close_only_that_connection() {
    let server = TestServer::start(Limits::default());
    let mut other = server.client();
    let cases: &[(Vec<u8>, u16, &str)] = &[
        (
            b"PUT /mmds HTTP/1.1\r\nContent-Length: 51201\r\n\r\n".to_vec(),
            413,
            "larger than the limit of 51200",
        ),
        (
            b"PUT /mmds HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            501,
            "Content-Length",
        ),
        (
            format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9000)).into_bytes(),
            431,
            "8192",
        ),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(), 400, "malformed"),
    ];
    for (raw, status, needle) in cases {
        let mut c = server.client();
        c.send_raw(raw).unwrap();
        let r = c.read_response().unwrap();
        assert_eq!(r.status, *status, "{r:?}");
        assert!(r.fault_message().unwrap().contains(needle), "{r:?}");
        assert!(r.close);
        assert!(c.read_response().is_err(), "the server closes after a framing error");
        assert_eq!(other.request("GET", "/version", None).unwrap().status, 200);
    }
    // A body exactly at the limit is accepted.
    let big = json!({"k": "x".repeat(51200 - 8)}).to_string();
    assert_eq!(big.len(), 51200);
    assert_eq!(other.request("PUT", "/mmds", Some(&big)).unwrap().status, 204);
}

#[test]
fn expect_continue_and_http10() {
    let server = TestServer::start(Limits::default());
    let mut c = server.client();
    let body = "{\"state\": \"Resumed\"}";
    c.send_raw(
        format!(
            "PATCH /vm HTTP/1.1\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut interim = [0u8; 25];
    c.stream().read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send_raw(body.as_bytes()).unwrap();
    assert_eq!(c.read_response().unwrap().status, 204);
    c.send_raw(b"GET /version HTTP/1.0\r\n\r\n").unwrap();
    let r = c.read_response().unwrap();
    assert!(r.status == 200 && r.close);
    assert!(c.read_response().is_err());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start(Limits::default());
    let mut c = server.client();
    let mut batch = Vec::new();
    for i in 0..50 {
        if i % 2 == 0 {
            batch.extend(ApiClient::encode(
                "PUT",
                "/balloon",
                Some(&format!("{{\"amount_mib\": {i}, \"deflate_on_oom\": false}}")),
            ));
        } else {
            batch.extend(ApiClient::encode("GET", "/bad", None));
        }
    }
    c.send_raw(&batch).unwrap();
    for i in 0..50 {
        let r = c.read_response().unwrap();
        assert_eq!(r.status, if i % 2 == 0 { 204 } else { 400 }, "response {i}");
    }
    let calls = server.calls.lock().unwrap();
    let amounts: Vec<u32> = calls
        .iter()
        .map(|c| match c {
            ApiRequest::PutBalloon(b) => b.amount_mib,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(amounts, (0..50).step_by(2).collect::<Vec<u32>>());
}

#[test]
fn slowloris_is_closed_while_others_are_served() {
    let server = TestServer::start(quick_limits());
    let mut slow = UnixStream::connect(&server.path).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    slow.write_all(b"PUT /vm HTTP/1.1\r\nContent-Length: 20\r\n\r\n{\"sta")
        .unwrap();
    // Others are served while the partial request waits.
    let mut c = server.client();
    for _ in 0..10 {
        assert_eq!(c.request("GET", "/version", None).unwrap().status, 200);
    }
    // The server gives up on the partial request: a 408 fault, then end of stream.
    let mut got = Vec::new();
    slow.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("fault_message"), "{text}");
    assert_eq!(server.call_count(), 10, "the partial request never reached the backend");
    assert_eq!(c.request("GET", "/version", None).unwrap().status, 200);
}

#[test]
fn a_hundred_parallel_clients() {
    let server = TestServer::start(Limits {
        max_connections: 128,
        ..Limits::default()
    });
    let threads: Vec<_> = (0..100)
        .map(|t| {
            let path = server.path.clone();
            std::thread::spawn(move || {
                let mut c = ApiClient::connect(&path).unwrap();
                c.set_timeout(Some(Duration::from_secs(60))).unwrap();
                for i in 0..10 {
                    let body = format!("{{\"amount_mib\": {}}}", t * 10 + i);
                    assert_eq!(c.request("PATCH", "/balloon", Some(&body)).unwrap().status, 204);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut seen: Vec<u32> = server
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| match c {
            ApiRequest::PatchBalloon(b) => b.amount_mib,
            other => panic!("{other:?}"),
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..1000).collect::<Vec<u32>>(),
        "every request handled exactly once"
    );
}

#[test]
fn connections_past_the_limit_are_refused() {
    let server = TestServer::start(Limits::default());
    let mut clients: Vec<ApiClient> = (0..64).map(|_| server.client()).collect();
    for c in &mut clients {
        assert_eq!(c.request("GET", "/version", None).unwrap().status, 200);
    }
    let mut extra = server.client();
    let r = extra.read_response().unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.fault_message().unwrap().contains("too many API connections"));
    drop(clients.pop());
    // Once one leaves, a new client gets in (the server notices the close on its next poll).
    let mut served = false;
    for _ in 0..200 {
        let mut c = server.client();
        if c.request("GET", "/version", None).is_ok_and(|r| r.status == 200) {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(served);
}

#[test]
fn a_client_that_never_reads_is_bounded_and_dropped() {
    let server = TestServer::start(quick_limits());
    let mut greedy = UnixStream::connect(&server.path).unwrap();
    greedy.set_nonblocking(true).unwrap();
    let request = ApiClient::encode("GET", "/vm/config", None);
    let (mut sent, mut requests) = (0usize, 0usize);
    // Pipeline requests without reading a byte until the server stops taking them: writes
    // block for 1000 tries in a row (a server still reading, polled every 20 ms at most, would
    // have drained the socket long before) or fail because the server dropped us.
    let mut blocked_rounds = 0;
    while blocked_rounds < 1000 && sent < (256 << 20) {
        match greedy.write(&request) {
            Ok(n) if n == request.len() => {
                sent += n;
                requests += 1;
                blocked_rounds = 0;
            }
            Ok(n) => {
                sent += n;
                break;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                blocked_rounds += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => break,
        }
    }
    assert!(
        sent < (256 << 20),
        "the server kept reading from a client that never reads"
    );
    let handled = server.call_count();
    assert!(handled < requests, "handled {handled} of {requests}: no back-pressure");
    // Others are served meanwhile.
    let mut c = server.client();
    assert_eq!(c.request("GET", "/version", None).unwrap().status, 200);
    // Without reading, the stuck client is dropped once its replies go unread for
    // write_timeout; the polite client stays.
    let conns = || server.connections.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..2000 {
        if conns() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(conns(), 1, "only the polite client is left");
    // What the kernel had buffered can still be read, then the stream ends (not a timeout).
    greedy.set_nonblocking(false).unwrap();
    greedy.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut sink = [0u8; 65536];
    let mut pending = 0usize;
    let end = loop {
        match greedy.read(&mut sink) {
            Ok(0) => break None,
            Ok(n) => pending += n,
            Err(e) => break Some(e.kind()),
        }
    };
    assert!(matches!(end, None | Some(ErrorKind::ConnectionReset)), "{end:?}");
    eprintln!("never-reading client: wrote {sent} bytes ({requests} requests), server handled {handled}, {pending} bytes of replies were buffered");
    assert_eq!(c.request("GET", "/version", None).unwrap().status, 200);
}

#[test]
fn bind_replaces_a_stale_socket_and_refuses_other_files() {
    let dir = TempDir::new();
    let path = dir.0.join("api.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a stale socket file");
    let server = ApiServer::bind(&path).unwrap();
    assert!(UnixStream::connect(&path).is_ok());
    drop(server);
    assert!(!path.exists(), "the server removes its socket");
    std::fs::write(&path, b"precious").unwrap();
    let e = ApiServer::bind(&path).err().expect("refused");
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn a_long_pipeline_of_large_replies_completes() {
    // More replies than the per-connection output bound: the server must resume the requests
    // it set aside once the client reads, without waiting for new input.
    let server = TestServer::start(Limits::default());
    let mut c = server.client();
    let n = 1000;
    let batch: Vec<u8> = (0..n)
        .flat_map(|_| ApiClient::encode("GET", "/vm/config", None))
        .collect();
    let mut writer = c.stream().try_clone().unwrap();
    let t = std::thread::spawn(move || writer.write_all(&batch).unwrap());
    let mut bytes = 0;
    for i in 0..n {
        let r = c.read_response().unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert_eq!(r.status, 200, "reply {i}");
        bytes += r.body.len();
    }
    t.join().unwrap();
    assert!(
        bytes > 2 * Limits::default().max_pending_output,
        "replies ({bytes} bytes) must exceed the bound"
    );
    assert_eq!(server.call_count(), n);
}

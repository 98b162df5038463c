#![allow(clippy::unwrap_used)]

use std::io::BufRead;

use api::models::actions::{ActionType, InstanceActionInfo};

use super::*;

/// Answers every request, failing PUT /drive.
struct Fake;
impl Backend for Fake {
    fn handle(&mut self, req: ApiRequest) -> Result<ApiReply, ApiFault> {
        match req {
            ApiRequest::PutDrive(_) => Err(ApiFault::new(400, "no")),
            _ => Ok(ApiReply::NoContent),
        }
    }
}

fn temp(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("hearth-metrics-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn drive_req() -> ApiRequest {
    let body = r#"{"drive_id":"d","path_on_host":"/x","is_root_device":false}"#;
    ApiRequest::PutDrive(serde_json::from_str(body).unwrap())
}

#[test]
fn api_requests_are_counted_and_flushed_as_json_lines() {
    let m = Metrics::default();
    assert!(m.flush().unwrap_err().contains("PUT /metrics"), "no file yet");
    let path = temp("lines");
    let e = m.set_path(path.to_str().unwrap()).unwrap_err();
    assert!(e.contains(path.to_str().unwrap()) && e.contains("No such file"), "{e}");
    File::create(&path).unwrap();
    m.set_path(path.to_str().unwrap()).unwrap();
    let mut fake = Fake;
    let mut counted = Counted {
        inner: &mut fake,
        metrics: &m,
    };
    counted.handle(ApiRequest::GetInstanceInfo).unwrap();
    counted.handle(drive_req()).unwrap_err();
    counted.handle(drive_req()).unwrap_err();
    let flush = InstanceActionInfo {
        action_type: ActionType::FlushMetrics,
    };
    counted.handle(ApiRequest::PutActions(flush)).unwrap();
    m.flush().unwrap();
    m.flush().unwrap();
    let lines: Vec<serde_json::Value> = std::io::BufReader::new(File::open(&path).unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let (a, b) = (&lines[0], &lines[1]);
    assert!(a["utc_timestamp_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(a["get_api_requests"]["instance_info_count"], 1);
    assert_eq!(a["put_api_requests"]["drive_count"], 2);
    assert_eq!(a["put_api_requests"]["drive_fails"], 2);
    assert_eq!(a["put_api_requests"]["actions_count"], 1);
    assert_eq!(
        b["put_api_requests"]["drive_count"], 0,
        "the second line has the changes only"
    );
    assert!(a.get("block").is_none(), "no VM, no device groups");
    let prom = m.prometheus();
    assert!(prom.contains("hearth_api_requests_total{method=\"put\",resource=\"drive\"} 2"));
    assert!(prom.contains("hearth_api_request_fails_total{method=\"put\",resource=\"drive\"} 2"));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_full_fifo_drops_lines_without_blocking() {
    let path = temp("fifo");
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let m = Metrics::default();
    m.set_path(path.to_str().unwrap()).unwrap();
    // Nobody reads: the pipe (64 KiB) fills, then flushes fail at once instead of blocking.
    let mut failed = 0;
    for _ in 0..10_000 {
        if m.flush().is_err() {
            failed += 1;
            if failed == 3 {
                break;
            }
        }
    }
    assert_eq!(failed, 3);
    let st = m.state();
    assert!(st.missed_metrics_count + st.metrics_fails >= 3);
    drop(st);
    assert!(m.prometheus().contains("hearth_logger_missed_metrics_count_total"));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn every_request_has_a_group_and_resource() {
    assert_eq!(api_key(&ApiRequest::GetExitStats), ("get_api_requests", "exit_stats"));
    assert_eq!(api_key(&drive_req()), ("put_api_requests", "drive"));
    let pause = ApiRequest::PatchVm(serde_json::from_str(r#"{"state":"Paused"}"#).unwrap());
    assert_eq!(api_key(&pause), ("patch_api_requests", "vm"));
    assert_eq!(latency_key(&pause), Some("pause_vm"));
    assert_eq!(latency_key(&ApiRequest::GetVersion), None);
}

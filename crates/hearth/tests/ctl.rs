//! `hearth ctl` against a real API server on a real socket (in this process, with a backend
//! that records calls): each command sends the request it names, exit codes are 0/1/2, and a
//! fault is one line on stderr.

#![allow(clippy::unwrap_used)]

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use api::models::balloon::BalloonUpdate;
use api::models::vm::{Vm, VmState};
use api::{ApiFault, ApiReply, ApiRequest, ApiServer, Backend};
use serde_json::json;

struct Recorder(Arc<Mutex<Vec<ApiRequest>>>);

impl Backend for Recorder {
    fn handle(&mut self, req: ApiRequest) -> Result<ApiReply, ApiFault> {
        self.0.lock().unwrap().push(req.clone());
        match req {
            ApiRequest::GetInstanceInfo => Ok(ApiReply::Json(
                json!({"id": "vm1", "state": "Running", "vmm_version": "0.1.0", "app_name": "hearth"}),
            )),
            ApiRequest::GetBalloonStatistics => Err(ApiFault::bad_request("Statistics are not enabled.")),
            _ => Ok(ApiReply::NoContent),
        }
    }
}

struct Server {
    path: PathBuf,
    calls: Arc<Mutex<Vec<ApiRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(name: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("hearth-ctl-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let mut server = ApiServer::bind(&path).unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (mut backend, stop2) = (Recorder(calls.clone()), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: server.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, count 1.
                unsafe { libc::poll(&mut pfd, 1, 20) };
                server.poll(&mut backend);
            }
        });
        Server {
            path,
            calls,
            stop,
            thread: Some(thread),
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hearth"))
            .arg("ctl")
            .arg("--api-sock")
            .arg(&self.path)
            .args(args)
            .output()
            .unwrap()
    }

    fn last_call(&self) -> ApiRequest {
        self.calls.lock().unwrap().last().cloned().expect("a call")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn commands_send_their_requests() {
    let s = Server::start("cmds");
    ok(&s.ctl(&["pause"]));
    assert_eq!(s.last_call(), ApiRequest::PatchVm(Vm { state: VmState::Paused }));
    ok(&s.ctl(&["resume"]));
    assert_eq!(
        s.last_call(),
        ApiRequest::PatchVm(Vm {
            state: VmState::Resumed
        })
    );
    ok(&s.ctl(&["balloon", "set", "64"]));
    assert_eq!(
        s.last_call(),
        ApiRequest::PatchBalloon(BalloonUpdate { amount_mib: 64 })
    );
    ok(&s.ctl(&[
        "snapshot",
        "create",
        "--snapshot",
        "/tmp/s",
        "--mem",
        "/tmp/m",
        "--diff",
    ]));
    assert!(matches!(s.last_call(), ApiRequest::PutSnapshotCreate(c) if c.mem_file_path == "/tmp/m"));
    ok(&s.ctl(&[
        "snapshot",
        "load",
        "--snapshot",
        "/tmp/s",
        "--mem",
        "/tmp/m",
        "--resume",
    ]));
    assert!(matches!(s.last_call(), ApiRequest::PutSnapshotLoad(l) if l.resume_vm));
    ok(&s.ctl(&["ctrl-alt-del"]));
    assert!(matches!(s.last_call(), ApiRequest::PutActions(_)));
    ok(&s.ctl(&[
        "put",
        "/drives/root",
        r#"{"drive_id": "root", "path_on_host": "/r", "is_root_device": true}"#,
    ]));
    assert!(matches!(s.last_call(), ApiRequest::PutDrive(d) if d.drive_id == "root"));
    ok(&s.ctl(&["get", "/vm/config"]));
    assert_eq!(s.last_call(), ApiRequest::GetVmConfig);
    let text = ok(&s.ctl(&["info"]));
    assert!(text.contains("state: Running"), "{text}");
    let raw = ok(&s.ctl(&["--json", "info"]));
    let v: serde_json::Value = serde_json::from_str(raw.trim()).unwrap();
    assert_eq!(v["id"], "vm1");
}

#[test]
fn faults_and_usage_errors() {
    let s = Server::start("faults");
    let out = s.ctl(&["balloon", "stats"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr, "hearth ctl: Statistics are not enabled. (400)\n");
    // Rejected by the server's parser: never reaches the backend.
    let before = s.calls.lock().unwrap().len();
    let out = s.ctl(&["patch", "/vm", r#"{"state": "Sleeping"}"#]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown variant `Sleeping`") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let out = s.ctl(&["get", "/nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid request method and/or path: GET nope."));
    assert_eq!(s.calls.lock().unwrap().len(), before);
    // Usage errors: 2.
    assert_eq!(s.ctl(&["balloon", "set", "lots"]).status.code(), Some(2));
    assert_eq!(s.ctl(&["frobnicate"]).status.code(), Some(2));
    // No server there: 1, one line.
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["ctl", "--api-sock", "/nonexistent/api.sock", "info"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("hearth ctl: cannot connect to the API socket /nonexistent/api.sock")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
}

//! Shared by the API integration tests: a real server on a temp socket run by a thread that
//! waits on the server's fd like the VMM's event loop would, a backend that records every call,
//! and the spec's schemas.

#![allow(dead_code)]

pub mod schema;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use api::models::balloon::{Balloon, BalloonStats};
use api::models::instance::{InstanceInfo, InstanceState, Version};
use api::models::machine_config::MachineConfig;
use api::{ApiFault, ApiReply, ApiRequest, ApiServer, Backend, Limits};
use serde_json::json;

/// Answers like a VMM that has booted, and records every call.
pub struct RecordingBackend {
    pub calls: Arc<Mutex<Vec<ApiRequest>>>,
}

impl Backend for RecordingBackend {
    fn handle(&mut self, req: ApiRequest) -> Result<ApiReply, ApiFault> {
        self.calls.lock().unwrap().push(req.clone());
        match req {
            ApiRequest::GetInstanceInfo => ApiReply::json(&InstanceInfo {
                id: "test-vm".into(),
                state: InstanceState::Running,
                vmm_version: "0.1.0".into(),
                app_name: "hearth".into(),
            }),
            ApiRequest::GetVersion => ApiReply::json(&Version {
                firecracker_version: "0.1.0".into(),
            }),
            ApiRequest::GetMachineConfig => ApiReply::json(&MachineConfig::default()),
            ApiRequest::GetBalloon => ApiReply::json(&Balloon {
                amount_mib: 64,
                deflate_on_oom: true,
                stats_polling_interval_s: 1,
                free_page_hinting: false,
                free_page_reporting: false,
            }),
            ApiRequest::GetBalloonStatistics => ApiReply::json(&BalloonStats {
                target_pages: 16384,
                actual_pages: 16384,
                target_mib: 64,
                actual_mib: 64,
                free_memory: Some(1 << 20),
                ..Default::default()
            }),
            ApiRequest::GetVmConfig => ApiReply::json(&api::parse_config_file(
                r#"{"boot-source": {"kernel_image_path": "/k"}, "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
                    "drives": [{"drive_id": "root", "path_on_host": "/r", "is_root_device": true}]}"#,
            )?),
            ApiRequest::GetMmds => Ok(ApiReply::Json(json!({"latest": {"x": 1}}))),
            ApiRequest::GetMetricsPrometheus => Ok(ApiReply::Text("hearth_up 1\n".into())),
            ApiRequest::GetExitStats => Ok(ApiReply::Json(
                json!({"vcpus": [{"id": 0, "exits": {"io": 5, "hlt": 2}}]}),
            )),
            ApiRequest::PutSnapshotLoad(_) => {
                Err(ApiFault::bad_request("Loading a snapshot is not allowed after boot."))
            }
            _ => Ok(ApiReply::NoContent),
        }
    }
}

/// A server on its own thread; dropped → stopped and the socket removed.
pub struct TestServer {
    pub path: PathBuf,
    pub calls: Arc<Mutex<Vec<ApiRequest>>>,
    /// Open connections as of the last poll.
    pub connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: TempDir,
}

impl TestServer {
    pub fn start(limits: Limits) -> TestServer {
        let dir = TempDir::new();
        let path = dir.0.join("api.sock");
        let mut server = ApiServer::bind_with(&path, limits).expect("bind");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut backend = RecordingBackend { calls: calls.clone() };
        let (stop2, conns2) = (stop.clone(), connections.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                // The VMM's loop: wait for the server's one fd, then poll.
                let mut pfd = libc::pollfd {
                    fd: server.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, count 1.
                unsafe { libc::poll(&mut pfd, 1, 20) };
                server.poll(&mut backend);
                conns2.store(server.connections(), Ordering::Relaxed);
            }
        });
        TestServer {
            path,
            calls,
            connections,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub fn client(&self) -> api::client::ApiClient {
        let c = api::client::ApiClient::connect(&self.path).expect("connect");
        c.set_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        c
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "hearth-api-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

//! The only entry point from the API into the VMM: every [`ApiRequest`] is answered here,
//! before boot by [`PreBoot`] (which collects Firecracker-style resources and builds or
//! restores the VM on `InstanceStart` / `PUT /snapshot/load`) and after boot by [`Runtime`]
//! (pause/resume, snapshots, configuration reads). Both count every request and keep the
//! metrics (`crate::metrics`); `PUT /logger` goes to the [`LoggerHook`] the binary installs.
//!
//! What is allowed when follows Firecracker's rules: configuration PUTs only before boot,
//! pause/resume and snapshot creation only after, snapshot load only before. Capabilities
//! hearth does not have yet answer 400 with a message that says so.
//!
//! Files: `resources.rs` (Firecracker resources ↔ [`VmConfig`]), `preboot.rs` ([`PreBoot`]),
//! `runtime.rs` ([`Runtime`]); this file has what both share and the event-loop glue.

mod preboot;
mod resources;
mod runtime;

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use api::models::instance::{InstanceInfo, InstanceState};
use api::models::vm_config::FullVmConfig;
use api::{ApiFault, ApiReply, ApiRequest, ApiServer};

use crate::builder::{restore_linux, ConsoleIo};
use crate::metrics::{Counted, Metrics};
use crate::persist;
use crate::vmm::{Controller, VmExit, Vmm};

pub use preboot::{LoggerHook, PreBoot};
pub use resources::{full_config_from, vm_config_from};
pub use runtime::Runtime;

/// What every reply about the instance carries.
#[derive(Clone, Debug)]
pub struct InstanceMeta {
    pub id: String,
}

pub(super) fn bad(msg: impl Into<String>) -> ApiFault {
    ApiFault::new(400, msg)
}

pub(super) fn not_yet(what: &str) -> ApiFault {
    bad(format!("{what} is not supported by hearth yet"))
}

pub(super) fn after_boot() -> ApiFault {
    bad("The requested operation is not supported after starting the microVM.")
}

pub(super) fn before_boot() -> ApiFault {
    bad("The requested operation is not supported before starting the microVM.")
}

pub(super) fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

pub(super) fn info(meta: &InstanceMeta, state: InstanceState) -> Result<ApiReply, ApiFault> {
    ApiReply::json(&InstanceInfo {
        id: meta.id.clone(),
        state,
        vmm_version: version(),
        app_name: "hearth".into(),
    })
}

/// The files a restore reads: the state file, the base memory file, and diff memory files
/// laid over it in order.
pub struct RestorePaths<'a> {
    pub state: &'a Path,
    pub mem: &'a Path,
    pub diffs: &'a [PathBuf],
}

/// Restores a VM from a snapshot's files; `adjust` may change the saved configuration first
/// (new tap name, dirty tracking, ...). Returns one-line errors.
pub fn restore(
    paths: &RestorePaths<'_>,
    io: ConsoleIo,
    paused: bool,
    adjust: impl FnOnce(&mut persist::MachineSnapshot) -> Result<(), String>,
) -> Result<Vmm, String> {
    let mut snap = persist::load(paths.state).map_err(|e| format!("Cannot load the snapshot: {}", chain(&e)))?;
    adjust(&mut snap)?;
    let memory = persist::map_memory_with_diffs(&snap, paths.mem, paths.diffs, paths.state)
        .map_err(|e| format!("Cannot load the snapshot: {}", chain(&e)))?;
    restore_linux(snap, memory, io, paused).map_err(|e| format!("Cannot restore the snapshot: {}", chain(&e)))
}

pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = s.source();
    }
    parts.join(": ")
}

pub(super) fn no_balloon() -> ApiFault {
    bad("No balloon device is configured.")
}

pub(super) fn before_boot_patch() -> Result<ApiReply, ApiFault> {
    Err(before_boot())
}

pub(super) fn unsupported(req: &ApiRequest) -> Result<ApiReply, ApiFault> {
    let name = format!("{req:?}");
    let name = name.split(['(', ' ']).next().unwrap_or("this request");
    Err(not_yet(name))
}

/// Serves the API from the running VMM's event loop (see [`Controller`]).
pub struct ApiController {
    pub server: ApiServer,
    pub meta: InstanceMeta,
    pub config: FullVmConfig,
    pub metrics: Metrics,
}

impl Controller for ApiController {
    fn fd(&self) -> RawFd {
        self.server.as_raw_fd()
    }

    fn on_readable(&mut self, vmm: &mut Vmm) -> Option<VmExit> {
        let mut rt = Runtime {
            meta: &self.meta,
            config: &mut self.config,
            vmm,
            metrics: &self.metrics,
            exit: None,
        };
        self.server.poll(&mut Counted {
            inner: &mut rt,
            metrics: &self.metrics,
        });
        rt.exit
    }
}

/// Serves the API before boot until the VM is started or restored; blocks between requests.
pub fn serve_until_started(server: &mut ApiServer, pre: &mut PreBoot) -> std::io::Result<()> {
    while pre.vmm.is_none() {
        let mut pfd = libc::pollfd {
            fd: server.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on the stack, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        let metrics = pre.metrics.clone();
        server.poll(&mut Counted {
            inner: pre,
            metrics: &metrics,
        });
    }
    Ok(())
}

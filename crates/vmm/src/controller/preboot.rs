//! Before boot: the API collects Firecracker resources, then builds or restores the VM.

use std::path::{Path, PathBuf};

use api::models::actions::ActionType;
use api::models::instance::{InstanceState, Version};
use api::models::logger::Logger;
use api::models::vm_config::FullVmConfig;
use api::{ApiFault, ApiReply, ApiRequest, Backend};

use crate::builder::{build_linux, ConsoleIo};
use crate::config::NetBackend;
use crate::metrics::Metrics;
use crate::vmm::Vmm;

use super::*;

/// Redirects hearth's log (`PUT /logger`): the binary owns the logger, the VMM only asks.
pub type LoggerHook = Box<dyn FnMut(&Logger) -> Result<(), String>>;

/// Before boot: collects the configuration; builds (InstanceStart) or restores (snapshot load)
/// the VM, which the caller then runs with a [`Runtime`] controller.
pub struct PreBoot {
    pub meta: InstanceMeta,
    pub config: FullVmConfig,
    io: Option<ConsoleIo>,
    /// The VM, once started or restored.
    pub vmm: Option<Vmm>,
    /// Carried on into the [`ApiController`] once the VM runs.
    pub metrics: Metrics,
    logger: Option<LoggerHook>,
}

impl PreBoot {
    pub fn new(meta: InstanceMeta, config: FullVmConfig, io: ConsoleIo) -> Self {
        Self {
            meta,
            config,
            io: Some(io),
            vmm: None,
            metrics: Metrics::default(),
            logger: None,
        }
    }

    /// What `PUT /logger` calls (without one, it answers that logging cannot be configured).
    pub fn set_logger_hook(&mut self, hook: LoggerHook) {
        self.logger = Some(hook);
    }

    fn put_logger(&mut self, l: Logger) -> Result<ApiReply, ApiFault> {
        let hook = self
            .logger
            .as_mut()
            .ok_or_else(|| not_yet("PUT /logger in this mode"))?;
        hook(&l).map_err(bad)?;
        self.config.logger = Some(l);
        Ok(ApiReply::NoContent)
    }

    /// `PUT /serial`: COM1's output goes to `serial_out_path` (an existing file, appended to,
    /// or a FIFO with a reader) instead of stdout; the rate limit applies at boot.
    fn put_serial(&mut self, d: api::models::serial::SerialDevice) -> Result<ApiReply, ApiFault> {
        if let Some(path) = &d.serial_out_path {
            let file = open_serial_out(path)?;
            if let Some(io) = &mut self.io {
                io.output = Box::new(file);
            }
        }
        self.config.serial = Some(d);
        Ok(ApiReply::NoContent)
    }

    fn put_metrics(&mut self, m: api::models::metrics::Metrics) -> Result<ApiReply, ApiFault> {
        self.metrics.set_path(&m.metrics_path).map_err(bad)?;
        self.config.metrics = Some(m);
        Ok(ApiReply::NoContent)
    }

    /// Applies the `logger`, `metrics` and `serial` of a config file (before [`PreBoot::start`]).
    pub fn apply_log_and_metrics(&mut self) -> Result<(), ApiFault> {
        if let Some(d) = self.config.serial.clone() {
            self.put_serial(d)?;
        }
        if let Some(l) = self.config.logger.clone() {
            self.put_logger(l)?;
        }
        if let Some(m) = self.config.metrics.clone() {
            self.put_metrics(m)?;
        }
        Ok(())
    }

    fn started(&mut self, mut vmm: Vmm) {
        self.metrics.attach(&mut vmm, &self.config);
        self.vmm = Some(vmm);
    }

    /// Builds and starts the configured VM (InstanceStart, or a config file).
    pub fn start(&mut self) -> Result<(), ApiFault> {
        let config = vm_config_from(&self.config)?;
        let io = self.io.take().ok_or_else(|| bad("the microVM was already started"))?;
        match build_linux(&config, io) {
            Ok(vmm) => {
                self.started(vmm);
                Ok(())
            }
            Err(e) => Err(bad(format!("Cannot start the microVM: {}", chain(&e)))),
        }
    }

    fn load_snapshot(&mut self, p: &api::models::snapshot::SnapshotLoadParams) -> Result<(), ApiFault> {
        let mem = match (&p.mem_file_path, &p.mem_backend) {
            (Some(m), None) => m.clone(),
            (None, Some(b)) if b.backend_type == api::models::snapshot::MemoryBackendType::File => {
                b.backend_path.clone()
            }
            (None, Some(_)) => return Err(not_yet("the userfaultfd memory backend")),
            _ => return Err(bad("exactly one of mem_file_path and mem_backend is required")),
        };
        let track = p.enable_diff_snapshots || p.track_dirty_pages;
        let io = self.io.take().ok_or_else(|| bad("the microVM was already started"))?;
        let paths = RestorePaths {
            state: Path::new(&p.snapshot_path),
            mem: Path::new(&mem),
            diffs: &[],
        };
        let vmm = restore(&paths, io, !p.resume_vm, |snap| {
            snap.config.track_dirty_pages |= track;
            if let Some(o) = &p.vsock_override {
                match &mut snap.config.vsock {
                    Some(v) => v.uds = PathBuf::from(&o.uds_path),
                    None => return Err("vsock override: the snapshot has no vsock device".into()),
                }
            }
            for o in &p.network_overrides {
                match &mut snap.config.net {
                    Some(n) => n.backend = NetBackend::Tap(o.host_dev_name.clone()),
                    None => {
                        return Err(format!(
                            "network override '{}': the snapshot has no network",
                            o.iface_id
                        ))
                    }
                }
            }
            Ok(())
        })
        .map_err(bad)?;
        self.started(vmm);
        Ok(())
    }
}

impl Backend for PreBoot {
    fn handle(&mut self, req: ApiRequest) -> Result<ApiReply, ApiFault> {
        if self.vmm.is_some() {
            // Started by an earlier request of the same poll: the caller switches to Runtime.
            return Err(bad("the microVM is starting; retry"));
        }
        let c = &mut self.config;
        match req {
            ApiRequest::GetInstanceInfo => info(&self.meta, InstanceState::NotStarted),
            ApiRequest::GetVersion => ApiReply::json(&Version {
                firecracker_version: version(),
            }),
            ApiRequest::GetMachineConfig => ApiReply::json(&c.machine_config.clone().unwrap_or_default()),
            ApiRequest::PutMachineConfig(m) => {
                c.machine_config = Some(m);
                Ok(ApiReply::NoContent)
            }
            ApiRequest::PatchMachineConfig(u) => {
                let mut m = c.machine_config.clone().unwrap_or_default();
                if let Some(v) = u.vcpu_count {
                    m.vcpu_count = v;
                }
                if let Some(v) = u.mem_size_mib {
                    m.mem_size_mib = v;
                }
                if let Some(v) = u.smt {
                    m.smt = v;
                }
                if let Some(v) = u.track_dirty_pages {
                    m.track_dirty_pages = v;
                }
                if u.cpu_template.is_some() {
                    m.cpu_template = u.cpu_template;
                }
                if let Some(v) = u.huge_pages {
                    m.huge_pages = v;
                }
                c.machine_config = Some(m);
                Ok(ApiReply::NoContent)
            }
            ApiRequest::PutBootSource(b) => {
                c.boot_source = Some(b);
                Ok(ApiReply::NoContent)
            }
            ApiRequest::PutDrive(d) => {
                match c.drives.iter_mut().find(|x| x.drive_id == d.drive_id) {
                    Some(x) => *x = d,
                    None => c.drives.push(d),
                }
                Ok(ApiReply::NoContent)
            }
            ApiRequest::PatchDrive(_) | ApiRequest::PatchNetworkInterface(_) => before_boot_patch(),
            ApiRequest::PutNetworkInterface(n) => {
                match c.network_interfaces.iter_mut().find(|x| x.iface_id == n.iface_id) {
                    Some(x) => *x = n,
                    None => c.network_interfaces.push(n),
                }
                Ok(ApiReply::NoContent)
            }
            ApiRequest::PutEntropy(e) => {
                c.entropy = Some(e);
                Ok(ApiReply::NoContent)
            }
            ApiRequest::PutVsock(v) => {
                c.vsock = Some(v);
                Ok(ApiReply::NoContent)
            }
            ApiRequest::PutBalloon(b) => {
                c.balloon = Some(b);
                Ok(ApiReply::NoContent)
            }
            ApiRequest::GetBalloon => match &c.balloon {
                Some(b) => ApiReply::json(b),
                None => Err(no_balloon()),
            },
            ApiRequest::GetBalloonStatistics => Err(if c.balloon.is_some() {
                before_boot()
            } else {
                no_balloon()
            }),
            ApiRequest::PatchBalloon(_) | ApiRequest::PatchBalloonStatistics(_) => Err(before_boot()),
            ApiRequest::PutActions(a) => match a.action_type {
                ActionType::InstanceStart => self.start().map(|()| ApiReply::NoContent),
                ActionType::SendCtrlAltDel => Err(before_boot()),
                ActionType::FlushMetrics => self.metrics.flush().map(|()| ApiReply::NoContent).map_err(bad),
            },
            ApiRequest::PutSerial(d) => self.put_serial(d),
            ApiRequest::PutLogger(l) => self.put_logger(l),
            ApiRequest::PutMetrics(m) => self.put_metrics(m),
            ApiRequest::GetMetricsPrometheus => Ok(ApiReply::Text(self.metrics.prometheus())),
            ApiRequest::GetExitStats => Err(before_boot()),
            ApiRequest::PatchVm(_) | ApiRequest::PutSnapshotCreate(_) => Err(before_boot()),
            ApiRequest::PutSnapshotLoad(p) => self.load_snapshot(&p).map(|()| ApiReply::NoContent),
            ApiRequest::GetVmConfig => ApiReply::json(&self.config),
            other => unsupported(&other),
        }
    }
}

/// Opens `path` for COM1's output: it must exist, as for `/logger` and `/metrics` (a regular
/// file is appended to); a FIFO must have a reader already (non-blocking open: without one this is an error, not a hung
/// API), and output it cannot take at once is dropped (counted in `uart.error_count`) rather
/// than stalling the guest.
fn open_serial_out(path: &str) -> Result<std::fs::File, ApiFault> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| bad(format!("Cannot open the serial output {path}: {e}")))
}

//! The only entry point from the API into the VMM: every [`ApiRequest`] is answered here,
//! before boot by [`PreBoot`] (which collects Firecracker-style resources and builds or
//! restores the VM on `InstanceStart` / `PUT /snapshot/load`) and after boot by [`Runtime`]
//! (pause/resume, snapshots, configuration reads). Both count every request and keep the
//! metrics (`crate::metrics`); `PUT /logger` goes to the [`LoggerHook`] the binary installs.
//!
//! What is allowed when follows Firecracker's rules: configuration PUTs only before boot,
//! pause/resume and snapshot creation only after, snapshot load only before. Capabilities
//! hearth does not have yet answer 400 with a message that says so.

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use api::models::actions::ActionType;
use api::models::instance::{InstanceInfo, InstanceState, Version};
use api::models::logger::Logger;
use api::models::net::parse_mac;
use api::models::vm::VmState as ApiVmState;
use api::models::vm_config::FullVmConfig;
use api::{ApiFault, ApiReply, ApiRequest, ApiServer, Backend};

use crate::builder::{build_linux, restore_linux, ConsoleIo};
use crate::config::{default_mac, DriveConfig, NetBackend, NetConfig, VmConfig, VsockConfig, DEFAULT_CMDLINE};
use crate::loader::BootProtocol;
use crate::metrics::{exit_stats, Counted, Metrics};
use crate::persist;
use crate::vmm::{Controller, VmExit, Vmm};

/// What every reply about the instance carries.
#[derive(Clone, Debug)]
pub struct InstanceMeta {
    pub id: String,
}

fn bad(msg: impl Into<String>) -> ApiFault {
    ApiFault::new(400, msg)
}

fn not_yet(what: &str) -> ApiFault {
    bad(format!("{what} is not supported by hearth yet"))
}

fn after_boot() -> ApiFault {
    bad("The requested operation is not supported after starting the microVM.")
}

fn before_boot() -> ApiFault {
    bad("The requested operation is not supported before starting the microVM.")
}

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

fn info(meta: &InstanceMeta, state: InstanceState) -> Result<ApiReply, ApiFault> {
    ApiReply::json(&InstanceInfo {
        id: meta.id.clone(),
        state,
        vmm_version: version(),
        app_name: "hearth".into(),
    })
}

/// A Firecracker token bucket (`size` tokens per `refill_time` ms) as a rate per second.
fn per_second(b: &api::models::rate_limiter::TokenBucket) -> u64 {
    b.size.saturating_mul(1000) / b.refill_time.max(1)
}

/// Firecracker resources → hearth's [`VmConfig`].
pub fn vm_config_from(full: &FullVmConfig) -> Result<VmConfig, ApiFault> {
    let boot = full
        .boot_source
        .as_ref()
        .ok_or_else(|| bad("Cannot start the microVM: no boot source (PUT /boot-source first)"))?;
    let mc = full.machine_config.clone().unwrap_or_default();
    if mc.smt {
        return Err(bad(
            "machine-config: smt is not supported by hearth (each vCPU is a core)",
        ));
    }
    if full.cpu_config.is_some() {
        return Err(not_yet("cpu-config (custom CPU templates)"));
    }
    if full.mmds_config.is_some() {
        return Err(not_yet("MMDS"));
    }
    if full.balloon.as_ref().is_some_and(|b| b.free_page_hinting) {
        return Err(not_yet("balloon free page hinting (free page reporting is supported)"));
    }
    let mut cmdline = boot.boot_args.clone().unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
    let mut drives = Vec::new();
    // Firecracker puts the root device first (vda); the others follow in insertion order.
    let mut ordered: Vec<_> = full.drives.iter().filter(|d| d.is_root_device).collect();
    ordered.extend(full.drives.iter().filter(|d| !d.is_root_device));
    for d in ordered {
        let path = d
            .path_on_host
            .as_ref()
            .ok_or_else(|| not_yet(&format!("drive '{}' without path_on_host (vhost-user)", d.drive_id)))?;
        if d.is_root_device && !cmdline.split_whitespace().any(|w| w.starts_with("root=")) {
            let ro = if d.is_read_only.unwrap_or(false) { "ro" } else { "rw" };
            cmdline = match &d.partuuid {
                Some(uuid) => format!("{cmdline} root=PARTUUID={uuid} {ro}"),
                None => format!("{cmdline} root=/dev/vda {ro}"),
            };
        }
        let rl = d.rate_limiter.as_ref();
        drives.push(DriveConfig {
            id: d.drive_id.clone(),
            path: PathBuf::from(path),
            read_only: d.is_read_only.unwrap_or(false),
            bps: rl.and_then(|r| r.bandwidth.as_ref()).map_or(0, per_second),
            iops: rl.and_then(|r| r.ops.as_ref()).map_or(0, per_second),
        });
    }
    let net = match full.network_interfaces.as_slice() {
        [] => None,
        [iface] => Some(NetConfig {
            backend: NetBackend::Tap(iface.host_dev_name.clone()),
            mac: match &iface.guest_mac {
                Some(m) => parse_mac(m).ok_or_else(|| bad(format!("guest_mac '{m}' is not a MAC address")))?,
                None => default_mac(&iface.host_dev_name),
            },
        }),
        _ => return Err(not_yet("more than one network interface")),
    };
    Ok(VmConfig {
        kernel: PathBuf::from(&boot.kernel_image_path),
        initrd: boot.initrd_path.as_ref().map(PathBuf::from),
        cmdline,
        vcpus: mc.vcpu_count,
        mem_mib: mc.mem_size_mib,
        boot_protocol: BootProtocol::Auto,
        profile_interval: None,
        drives,
        rng: full.entropy.is_some(),
        net,
        track_dirty_pages: mc.track_dirty_pages,
        vsock: full.vsock.as_ref().map(|v| VsockConfig {
            cid: u64::from(v.guest_cid),
            uds: PathBuf::from(&v.uds_path),
        }),
        balloon: full.balloon.as_ref().map(|b| crate::config::BalloonConfig {
            amount_mib: b.amount_mib,
            deflate_on_oom: b.deflate_on_oom,
            stats_polling_interval_s: b.stats_polling_interval_s,
            free_page_reporting: b.free_page_reporting,
        }),
    })
}

/// hearth's [`VmConfig`] as Firecracker resources (GET /vm/config of a VM started from the CLI
/// or restored from a snapshot).
pub fn full_config_from(c: &VmConfig) -> FullVmConfig {
    use api::models::boot_source::BootSource;
    use api::models::drive::Drive;
    use api::models::machine_config::MachineConfig;
    use api::models::net::NetworkInterface;
    FullVmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: c.kernel.display().to_string(),
            initrd_path: c.initrd.as_ref().map(|p| p.display().to_string()),
            boot_args: Some(c.cmdline.clone()),
        }),
        machine_config: Some(MachineConfig {
            vcpu_count: c.vcpus,
            mem_size_mib: c.mem_mib,
            track_dirty_pages: c.track_dirty_pages,
            ..MachineConfig::default()
        }),
        drives: c
            .drives
            .iter()
            .map(|d| Drive {
                drive_id: d.id.clone(),
                partuuid: None,
                is_root_device: false,
                cache_type: Default::default(),
                is_read_only: Some(d.read_only),
                path_on_host: Some(d.path.display().to_string()),
                rate_limiter: None,
                io_engine: None,
                socket: None,
            })
            .collect(),
        network_interfaces: c
            .net
            .iter()
            // The API describes tap interfaces only; `--net user` has no equivalent there.
            .filter_map(|n| match &n.backend {
                NetBackend::Tap(tap) => Some((n, tap)),
                NetBackend::User { .. } => None,
            })
            .map(|(n, tap)| NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: tap.clone(),
                guest_mac: Some(n.mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")),
                mtu: None,
                rx_rate_limiter: None,
                tx_rate_limiter: None,
            })
            .collect(),
        entropy: c.rng.then(Default::default),
        vsock: c.vsock.as_ref().map(|v| api::models::vsock::Vsock {
            guest_cid: u32::try_from(v.cid).unwrap_or(u32::MAX),
            uds_path: v.uds.display().to_string(),
            vsock_id: None,
        }),
        ..FullVmConfig::default()
    }
}

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

    fn put_metrics(&mut self, m: api::models::metrics::Metrics) -> Result<ApiReply, ApiFault> {
        self.metrics.set_path(&m.metrics_path).map_err(bad)?;
        self.config.metrics = Some(m);
        Ok(ApiReply::NoContent)
    }

    /// Applies the `logger` and `metrics` of a config file (before [`PreBoot::start`]).
    pub fn apply_log_and_metrics(&mut self) -> Result<(), ApiFault> {
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

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
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

fn no_balloon() -> ApiFault {
    bad("No balloon device is configured.")
}

fn before_boot_patch() -> Result<ApiReply, ApiFault> {
    Err(before_boot())
}

fn unsupported(req: &ApiRequest) -> Result<ApiReply, ApiFault> {
    let name = format!("{req:?}");
    let name = name.split(['(', ' ']).next().unwrap_or("this request");
    Err(not_yet(name))
}

/// After boot: answers requests against the running VM.
pub struct Runtime<'a> {
    pub meta: &'a InstanceMeta,
    pub config: &'a FullVmConfig,
    pub vmm: &'a mut Vmm,
    pub metrics: &'a Metrics,
    /// Set to end the VM after the reply.
    pub exit: Option<VmExit>,
}

impl Backend for Runtime<'_> {
    fn handle(&mut self, req: ApiRequest) -> Result<ApiReply, ApiFault> {
        match req {
            ApiRequest::GetInstanceInfo => {
                let state = if self.vmm.is_paused() {
                    InstanceState::Paused
                } else {
                    InstanceState::Running
                };
                info(self.meta, state)
            }
            ApiRequest::GetVersion => ApiReply::json(&Version {
                firecracker_version: version(),
            }),
            ApiRequest::GetMachineConfig => ApiReply::json(&self.config.machine_config.clone().unwrap_or_default()),
            ApiRequest::GetVmConfig => ApiReply::json(self.config),
            ApiRequest::PatchVm(v) => {
                let r = match v.state {
                    ApiVmState::Paused => self.vmm.pause(),
                    ApiVmState::Resumed => self.vmm.resume(),
                };
                r.map(|()| ApiReply::NoContent)
                    .map_err(|e| bad(format!("Cannot change the VM state: {}", chain(&e))))
            }
            ApiRequest::PutSnapshotCreate(p) => {
                let kind = match p.snapshot_type {
                    api::models::snapshot::SnapshotType::Diff => persist::SnapshotKind::Diff,
                    _ => persist::SnapshotKind::Full,
                };
                if !self.vmm.is_paused() {
                    return Err(bad(
                        "Cannot create a snapshot: the microVM must be paused (PATCH /vm Paused)",
                    ));
                }
                let mut last = 0u64;
                let info = persist::create(
                    self.vmm,
                    Path::new(&p.snapshot_path),
                    Path::new(&p.mem_file_path),
                    kind,
                    &mut |done: u64, total: u64| {
                        let pct = done * 100 / total.max(1);
                        if pct >= last + 25 {
                            last = pct;
                            log::info!("snapshot: memory {pct}% ({} of {} MiB)", done >> 20, total >> 20);
                        }
                    },
                )
                .map_err(|e| bad(format!("Cannot create the snapshot: {}", chain(&e))))?;
                log::info!(
                    "snapshot: {} + {} ({} MiB of {} MiB written) in {} ms",
                    info.state_path.display(),
                    info.mem_path.display(),
                    info.mem_written >> 20,
                    info.mem_bytes >> 20,
                    info.millis
                );
                Ok(ApiReply::NoContent)
            }
            ApiRequest::PutActions(a) => match a.action_type {
                ActionType::InstanceStart => Err(after_boot()),
                ActionType::SendCtrlAltDel => Err(not_yet("SendCtrlAltDel (the guest has no keyboard driver)")),
                ActionType::FlushMetrics => self.metrics.flush().map(|()| ApiReply::NoContent).map_err(bad),
            },
            ApiRequest::GetMetricsPrometheus => Ok(ApiReply::Text(self.metrics.prometheus())),
            ApiRequest::GetExitStats => Ok(ApiReply::Json(exit_stats(self.vmm))),
            ApiRequest::PutMachineConfig(_)
            | ApiRequest::PatchMachineConfig(_)
            | ApiRequest::PutBootSource(_)
            | ApiRequest::PutDrive(_)
            | ApiRequest::PutNetworkInterface(_)
            | ApiRequest::PutVsock(_)
            | ApiRequest::PutEntropy(_)
            | ApiRequest::PutBalloon(_)
            | ApiRequest::PutSnapshotLoad(_)
            | ApiRequest::PutLogger(_)
            | ApiRequest::PutMetrics(_)
            | ApiRequest::PutMmdsConfig(_)
            | ApiRequest::PutCpuConfig(_) => Err(after_boot()),
            ApiRequest::GetBalloon => {
                let h = self.vmm.devices().balloon.as_ref().ok_or_else(no_balloon)?;
                let cfg = h.config();
                ApiReply::json(&api::models::balloon::Balloon {
                    amount_mib: cfg.amount_mib,
                    deflate_on_oom: cfg.deflate_on_oom,
                    stats_polling_interval_s: cfg.stats_polling_interval_s,
                    free_page_hinting: false,
                    free_page_reporting: cfg.free_page_reporting,
                })
            }
            ApiRequest::PatchBalloon(u) => {
                let h = self.vmm.devices().balloon.as_ref().ok_or_else(no_balloon)?;
                h.set_target_mib(u.amount_mib)
                    .map(|()| ApiReply::NoContent)
                    .map_err(|e| bad(format!("Cannot set the balloon target: {}", chain(&e))))
            }
            ApiRequest::PatchBalloonStatistics(u) => {
                let h = self.vmm.devices().balloon.as_ref().ok_or_else(no_balloon)?;
                h.set_stats_interval(u.stats_polling_interval_s)
                    .map(|()| ApiReply::NoContent)
                    .map_err(|e| bad(format!("Cannot change the statistics interval: {}", chain(&e))))
            }
            ApiRequest::GetBalloonStatistics => {
                let h = self.vmm.devices().balloon.as_ref().ok_or_else(no_balloon)?;
                match h.stats() {
                    Some(st) => {
                        // Counters the guest did not report are left out, as in Firecracker.
                        let mut v = serde_json::to_value(&st).map_err(|e| ApiFault::new(500, e.to_string()))?;
                        if let Some(m) = v.as_object_mut() {
                            m.retain(|_, x| !x.is_null());
                        }
                        Ok(ApiReply::Json(v))
                    }
                    None => Err(bad(
                        "Statistics are not enabled (stats_polling_interval_s is 0) or none arrived yet.",
                    )),
                }
            }
            other => unsupported(&other),
        }
    }
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
            config: &self.config,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use api::models::boot_source::BootSource;

    #[test]
    fn resources_become_a_vm_config() {
        let mut full = FullVmConfig::default();
        assert!(vm_config_from(&full).unwrap_err().message.contains("boot source"));
        full.boot_source = Some(BootSource {
            kernel_image_path: "/k".into(),
            initrd_path: None,
            boot_args: Some("console=ttyS0".into()),
        });
        let c = vm_config_from(&full).unwrap();
        assert_eq!((c.vcpus, c.kernel.as_path()), (1, Path::new("/k")));
    }
}

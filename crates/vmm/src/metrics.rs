//! hearth's metrics: the counters a running VM has (API requests and latencies, per-drive and
//! per-interface I/O, entropy, COM1 output, the i8042, vCPU exits by reason, event-loop device events),
//! gathered from where they are counted — devices own `Arc`s of atomic counters
//! (`devices::metrics`), vCPUs their [`ExitCounters`] — and rendered on request
//! ([`render`]): Firecracker's JSON lines to the `PUT /metrics` file on every `FlushMetrics`
//! and every [`FLUSH_INTERVAL`] (a timerfd on the event loop), and Prometheus text for
//! `GET /metrics/prometheus`.
//!
//! Only what hearth really counts is reported. Firecracker groups hearth has nothing for
//! (`signals`, `seccomp`, `mmds`, `vsock`, `balloon`, ...) are left out, not zeroed.
//! Everything here runs on the event-loop thread (API and timer), so the shared state's mutex is
//! never contended and never taken on a vCPU thread.

pub mod render;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::models::vm::VmState;
use api::models::vm_config::FullVmConfig;
use api::{ApiFault, ApiReply, ApiRequest, Backend};
use devices::legacy::{I8042Metrics, UartMetrics};
use devices::metrics::{Counter, MetricGroup};
use devices::virtio::block::BlockMetrics;
use devices::virtio::net::NetMetrics;
use devices::virtio::rng::RngMetrics;
use vmm_sys_util::timerfd::TimerFd;

use crate::vmm::{EventHandler, Vmm};
use crate::vstate::exits::ExitCounters;
use render::Sample;

/// How often the metrics file gets a line without being asked (as Firecracker).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// The device counters of one machine (filled by the builder as it creates the devices).
#[derive(Clone, Default)]
pub struct DeviceMetrics {
    /// By drive id.
    pub blocks: Vec<(String, Arc<BlockMetrics>)>,
    /// By host tap name.
    pub nets: Vec<(String, Arc<NetMetrics>)>,
    pub rng: Option<Arc<RngMetrics>>,
    pub uart: Option<Arc<UartMetrics>>,
    pub i8042: Option<Arc<I8042Metrics>>,
}

/// The running VM's counters, once it is started.
struct Live {
    devices: DeviceMetrics,
    /// The name each interface of `devices.nets` is reported under (its API `iface_id`).
    net_ids: Vec<String>,
    vcpus: Vec<Arc<ExitCounters>>,
    device_events: Arc<Counter>,
}

#[derive(Default)]
struct State {
    /// (JSON group, resource) → [requests, failed requests].
    api: BTreeMap<(&'static str, &'static str), [u64; 2]>,
    /// Duration of the last successful operation of each kind.
    latencies_us: BTreeMap<&'static str, u64>,
    live: Option<Live>,
    sink: Option<File>,
    /// Counter totals at the previous JSON line.
    last: HashMap<String, u64>,
    metrics_fails: u64,
    missed_metrics_count: u64,
}

/// A handle on hearth's metrics, shared by the API controller and the periodic flush.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<State>>);

/// Opens `path` (an existing file or FIFO, as Firecracker wants: an API request never creates
/// files) for appending without ever blocking the event loop: O_APPEND | O_NONBLOCK, and read
/// access so that opening a FIFO does not wait for (or, non-blocking, fail without) a reader.
pub fn open_append_nonblocking(path: &str) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

impl Metrics {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `PUT /metrics`: JSON lines go to `path` from now on.
    pub fn set_path(&self, path: &str) -> Result<(), String> {
        let f = open_append_nonblocking(path).map_err(|e| format!("Cannot open the metrics file {path}: {e}"))?;
        self.state().sink = Some(f);
        Ok(())
    }

    /// Connects the metrics to a started VM: its device and vCPU counters, and (with a metrics
    /// file) the periodic flush on its event loop. Network interfaces are named by the API
    /// `iface_id` of their tap in `config`. A second call does nothing.
    pub fn attach(&self, vmm: &mut Vmm, config: &FullVmConfig) {
        let mut st = self.state();
        if st.live.is_some() {
            return;
        }
        let devices = vmm.devices().metrics.clone();
        let net_ids = devices
            .nets
            .iter()
            .map(|(tap, _)| {
                let iface = config.network_interfaces.iter().find(|n| &n.host_dev_name == tap);
                iface.map_or_else(|| tap.clone(), |n| n.iface_id.clone())
            })
            .collect();
        st.live = Some(Live {
            devices,
            net_ids,
            vcpus: vmm.exit_counters().to_vec(),
            device_events: vmm.device_events(),
        });
        if st.sink.is_some() {
            drop(st);
            match PeriodicFlush::new(self.clone()) {
                Ok(h) => vmm.add_event_handler(Box::new(h)),
                Err(e) => log::warn!("metrics: no periodic flush (cannot arm a timerfd: {e})"),
            }
        }
    }

    /// Writes one JSON line to the metrics file (`FlushMetrics`, and the periodic timer).
    pub fn flush(&self) -> Result<(), String> {
        let mut guard = self.state();
        let st = &mut *guard;
        if st.sink.is_none() {
            return Err("Cannot flush metrics: no metrics file is configured (PUT /metrics before boot)".into());
        }
        let samples = samples(st);
        let utc_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut line = render::json_line(&samples, &mut st.last, utc_ms);
        line.push('\n');
        let Some(sink) = st.sink.as_mut() else {
            return Ok(());
        };
        match sink.write(line.as_bytes()) {
            Ok(n) if n == line.len() => Ok(()),
            Ok(n) => {
                st.metrics_fails += 1;
                Err(format!(
                    "Cannot write metrics: short write ({n} of {} bytes)",
                    line.len()
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                st.missed_metrics_count += 1;
                Err("Cannot write metrics: the metrics file (FIFO) is full".into())
            }
            Err(e) => {
                st.metrics_fails += 1;
                Err(format!("Cannot write metrics: {e}"))
            }
        }
    }

    /// Every counter's total, in Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        render::prometheus(&samples(&self.state()))
    }

    fn record_api(&self, key: (&'static str, &'static str), ok: bool, latency: Option<(&'static str, Duration)>) {
        let mut st = self.state();
        let e = st.api.entry(key).or_default();
        e[0] += 1;
        if !ok {
            e[1] += 1;
        }
        if let Some((name, d)) = latency {
            st.latencies_us
                .insert(name, u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        }
    }
}

/// Every counter as samples (see [`render`]).
fn samples(st: &State) -> Vec<Sample> {
    let mut out = Vec::new();
    for (&(group, resource), &[count, fails]) in &st.api {
        let method = group.split('_').next().unwrap_or(group);
        let labels = vec![("method", method.to_string()), ("resource", resource.to_string())];
        for (family, help, field, value) in [
            (
                "api_requests_total",
                "API requests by method and resource.",
                "count",
                count,
            ),
            ("api_request_fails_total", "API requests that failed.", "fails", fails),
        ] {
            out.push(Sample {
                family: family.into(),
                help,
                gauge: false,
                labels: labels.clone(),
                group: Some(group.to_string()),
                aggregate: None,
                field: format!("{resource}_{field}"),
                value,
            });
        }
    }
    for (&op, &us) in &st.latencies_us {
        out.push(Sample {
            family: "latency_us".into(),
            help: "Duration of the last operation of its kind, as the API saw it, in microseconds.",
            gauge: true,
            labels: vec![("operation", op.to_string())],
            group: Some("latencies_us".into()),
            aggregate: None,
            field: op.to_string(),
            value: us,
        });
    }
    if let Some(live) = &st.live {
        live_samples(live, &mut out);
    }
    let logger = [
        (
            "metrics_fails",
            "Metrics lines that could not be written.",
            st.metrics_fails,
        ),
        (
            "missed_metrics_count",
            "Metrics lines dropped: the FIFO was full.",
            st.missed_metrics_count,
        ),
    ];
    let fields = logger.map(|(name, help, value)| devices::metrics::Field { name, help, value });
    render::device(&mut out, "logger", None, fields.to_vec());
    out
}

fn live_samples(live: &Live, out: &mut Vec<Sample>) {
    for (id, m) in &live.devices.blocks {
        render::device(out, "block", Some(("drive", id)), m.fields());
    }
    for ((_, m), id) in live.devices.nets.iter().zip(&live.net_ids) {
        render::device(out, "net", Some(("iface", id)), m.fields());
    }
    if let Some(m) = &live.devices.rng {
        render::device(out, "entropy", None, m.fields());
    }
    if let Some(m) = &live.devices.uart {
        render::device(out, "uart", None, m.fields());
    }
    if let Some(m) = &live.devices.i8042 {
        render::device(out, "i8042", None, m.fields());
    }
    for (id, c) in live.vcpus.iter().enumerate() {
        for (reason, value) in c.by_reason() {
            out.push(Sample {
                family: "vcpu_exits_total".into(),
                help: "KVM exits by vCPU and reason.",
                gauge: false,
                labels: vec![("vcpu", id.to_string()), ("reason", reason.to_string())],
                group: None,
                aggregate: Some("vcpu"),
                field: format!("exit_{reason}"),
                value,
            });
        }
    }
    let events = devices::metrics::Field {
        name: "device_events",
        help: "Device events (queue kicks, backend and timer wake-ups) the event loop served.",
        value: live.device_events.get(),
    };
    render::device(out, "vmm", None, vec![events]);
}

/// `GET /hearth/exit-stats`: `{"vcpus":[{"id":N,"exits":{"reason":count}}]}`.
pub fn exit_stats(vmm: &Vmm) -> serde_json::Value {
    let vcpus: Vec<serde_json::Value> = vmm
        .exit_counters()
        .iter()
        .enumerate()
        .map(|(id, c)| {
            let exits: serde_json::Map<String, serde_json::Value> = c
                .by_reason()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect();
            serde_json::json!({ "id": id, "exits": exits })
        })
        .collect();
    serde_json::json!({ "vcpus": vcpus })
}

/// Flushes the metrics every [`FLUSH_INTERVAL`], from the event loop.
struct PeriodicFlush {
    timer: TimerFd,
    metrics: Metrics,
}

impl PeriodicFlush {
    fn new(metrics: Metrics) -> std::io::Result<Self> {
        let mut timer = TimerFd::new()?;
        timer.reset(FLUSH_INTERVAL, Some(FLUSH_INTERVAL))?;
        Ok(Self { timer, metrics })
    }
}

impl EventHandler for PeriodicFlush {
    fn fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
    fn on_readable(&mut self) {
        let _ = self.timer.wait();
        if let Err(e) = self.metrics.flush() {
            log::debug!("metrics: {e}");
        }
    }
}

/// A [`Backend`] that counts the requests it passes to `inner` (Firecracker's
/// `get_api_requests`/`put_api_requests`/`patch_api_requests`) and times pause, resume and
/// snapshots (`latencies_us`).
pub struct Counted<'a, B: Backend> {
    pub inner: &'a mut B,
    pub metrics: &'a Metrics,
}

impl<B: Backend> Backend for Counted<'_, B> {
    fn handle(&mut self, req: ApiRequest) -> Result<ApiReply, ApiFault> {
        let key = api_key(&req);
        let op = latency_key(&req);
        let start = Instant::now();
        let r = self.inner.handle(req);
        let latency = op.filter(|_| r.is_ok()).map(|op| (op, start.elapsed()));
        self.metrics.record_api(key, r.is_ok(), latency);
        r
    }
}

fn latency_key(req: &ApiRequest) -> Option<&'static str> {
    match req {
        ApiRequest::PatchVm(v) => Some(match v.state {
            VmState::Paused => "pause_vm",
            VmState::Resumed => "resume_vm",
        }),
        ApiRequest::PutSnapshotCreate(_) => Some("full_create_snapshot"),
        ApiRequest::PutSnapshotLoad(_) => Some("load_snapshot"),
        _ => None,
    }
}

/// (JSON group, resource) of a request, with Firecracker's resource names where it has them.
fn api_key(req: &ApiRequest) -> (&'static str, &'static str) {
    use ApiRequest as R;
    const GET: &str = "get_api_requests";
    const PUT: &str = "put_api_requests";
    const PATCH: &str = "patch_api_requests";
    match req {
        R::GetInstanceInfo => (GET, "instance_info"),
        R::GetVersion => (GET, "vmm_version"),
        R::GetMachineConfig => (GET, "machine_cfg"),
        R::GetBalloon => (GET, "balloon"),
        R::GetBalloonStatistics => (GET, "balloon_stats"),
        R::GetVmConfig => (GET, "vm_config"),
        R::GetMmds => (GET, "mmds"),
        R::GetMetricsPrometheus => (GET, "metrics_prometheus"),
        R::GetExitStats => (GET, "exit_stats"),
        R::PutMachineConfig(_) => (PUT, "machine_cfg"),
        R::PutBootSource(_) => (PUT, "boot_source"),
        R::PutCpuConfig(_) => (PUT, "cpu_cfg"),
        R::PutDrive(_) => (PUT, "drive"),
        R::PutNetworkInterface(_) => (PUT, "network"),
        R::PutVsock(_) => (PUT, "vsock"),
        R::PutEntropy(_) => (PUT, "entropy"),
        R::PutSerial(_) => (PUT, "serial"),
        R::PutBalloon(_) => (PUT, "balloon"),
        R::PutLogger(_) => (PUT, "logger"),
        R::PutMetrics(_) => (PUT, "metrics"),
        R::PutActions(_) => (PUT, "actions"),
        R::PutSnapshotCreate(_) => (PUT, "snapshot_create"),
        R::PutSnapshotLoad(_) => (PUT, "snapshot_load"),
        R::PutMmds(_) => (PUT, "mmds"),
        R::PutMmdsConfig(_) => (PUT, "mmds_config"),
        R::PatchMachineConfig(_) => (PATCH, "machine_cfg"),
        R::PatchDrive(_) => (PATCH, "drive"),
        R::PatchNetworkInterface(_) => (PATCH, "network"),
        R::PatchBalloon(_) => (PATCH, "balloon"),
        R::PatchBalloonStatistics(_) => (PATCH, "balloon_stats"),
        R::PatchVm(_) => (PATCH, "vm"),
        R::PatchMmds(_) => (PATCH, "mmds"),
    }
}

#[cfg(test)]
mod tests;

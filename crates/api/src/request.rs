//! The typed boundary between the API server and the VMM: one [`ApiRequest`] per routed
//! (method, path), answered by a [`Backend`] with an [`ApiReply`] or an [`ApiFault`].

use serde::Serialize;
use serde_json::Value;

use crate::models::actions::InstanceActionInfo;
use crate::models::balloon::{Balloon, BalloonStatsUpdate, BalloonUpdate};
use crate::models::boot_source::BootSource;
use crate::models::cpu_config::CpuConfig;
use crate::models::drive::{Drive, PartialDrive};
use crate::models::entropy::EntropyDevice;
use crate::models::logger::Logger;
use crate::models::machine_config::{MachineConfig, MachineConfigUpdate};
use crate::models::metrics::Metrics;
use crate::models::mmds::MmdsConfig;
use crate::models::net::{NetworkInterface, PartialNetworkInterface};
use crate::models::serial::SerialDevice;
use crate::models::snapshot::{SnapshotCreateParams, SnapshotLoadParams};
use crate::models::vm::Vm;
use crate::models::vsock::Vsock;

/// One parsed, validated API call. Path ids have been checked against the body's id.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    /// GET / → `InstanceInfo`.
    GetInstanceInfo,
    /// GET /version → `{"firecracker_version": ...}`.
    GetVersion,
    /// GET /machine-config → `MachineConfiguration`.
    GetMachineConfig,
    PutMachineConfig(MachineConfig),
    PatchMachineConfig(MachineConfigUpdate),
    PutBootSource(BootSource),
    PutCpuConfig(CpuConfig),
    PutDrive(Drive),
    PatchDrive(PartialDrive),
    PutNetworkInterface(NetworkInterface),
    PatchNetworkInterface(PartialNetworkInterface),
    PutVsock(Vsock),
    PutEntropy(EntropyDevice),
    PutSerial(SerialDevice),
    /// GET /balloon → `Balloon`.
    GetBalloon,
    PutBalloon(Balloon),
    PatchBalloon(BalloonUpdate),
    /// GET /balloon/statistics → `BalloonStats`.
    GetBalloonStatistics,
    PatchBalloonStatistics(BalloonStatsUpdate),
    PutLogger(Logger),
    PutMetrics(Metrics),
    PutActions(InstanceActionInfo),
    PatchVm(Vm),
    /// GET /vm/config → `FullVmConfiguration`.
    GetVmConfig,
    PutSnapshotCreate(SnapshotCreateParams),
    PutSnapshotLoad(SnapshotLoadParams),
    /// PUT /mmds: replace the whole metadata store.
    PutMmds(Value),
    /// PATCH /mmds: JSON merge patch (RFC 7396) onto the store.
    PatchMmds(Value),
    /// GET /mmds → the store (`{}` when empty).
    GetMmds,
    PutMmdsConfig(MmdsConfig),
    // --- hearth extensions ---
    /// GET /metrics/prometheus → text/plain in Prometheus exposition format.
    GetMetricsPrometheus,
    /// GET /hearth/exit-stats → JSON: KVM exits per vCPU by reason.
    GetExitStats,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiReply {
    /// 204 No Content (successful PUT/PATCH).
    NoContent,
    /// 200 with a JSON body.
    Json(Value),
    /// 200 with a text/plain body.
    Text(String),
}

impl ApiReply {
    /// 200 JSON of any serializable model.
    pub fn json<T: Serialize>(value: &T) -> Result<ApiReply, ApiFault> {
        serde_json::to_value(value)
            .map(ApiReply::Json)
            .map_err(|e| ApiFault::new(500, format!("cannot serialize the reply: {e}")))
    }
}

/// A failed call: the HTTP status and the `fault_message` of the `{"fault_message": ...}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFault {
    pub status: u16,
    pub message: String,
}

impl ApiFault {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiFault {
            status,
            message: message.into(),
        }
    }

    /// 400 Bad Request, Firecracker's status for every rejected call.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiFault::new(400, message)
    }

    /// The JSON body: `{"fault_message": "..."}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "fault_message": self.message }).to_string()
    }
}

impl std::fmt::Display for ApiFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiFault {}

/// The VMM side: answers one call at a time, on the thread that calls [`crate::ApiServer::poll`].
/// It must not block for long (the API and the event loop share that thread).
pub trait Backend {
    fn handle(&mut self, req: ApiRequest) -> Result<ApiReply, ApiFault>;
}

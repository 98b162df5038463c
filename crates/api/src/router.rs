//! (method, path, body) → [`ApiRequest`]: Firecracker's routing and its fault messages.
//!
//! [`ROUTES`] is the single list of what is served: the matcher only finds templates in it and
//! `tests/spec.rs` checks it against `hearth-api.yaml` both ways. Firecracker paths hearth does
//! not serve yet are in [`NOT_YET`], with the reason the client gets back.

use crate::models::{check_id, parse_body, parse_json};
use crate::{ApiFault, ApiRequest};

/// Every (method, path template) hearth routes. `{...}` matches one path segment.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/version"),
    ("PUT", "/actions"),
    ("GET", "/machine-config"),
    ("PUT", "/machine-config"),
    ("PATCH", "/machine-config"),
    ("PUT", "/boot-source"),
    ("PUT", "/cpu-config"),
    ("PUT", "/drives/{drive_id}"),
    ("PATCH", "/drives/{drive_id}"),
    ("PUT", "/network-interfaces/{iface_id}"),
    ("PATCH", "/network-interfaces/{iface_id}"),
    ("PUT", "/vsock"),
    ("PUT", "/entropy"),
    ("PUT", "/serial"),
    ("GET", "/balloon"),
    ("PUT", "/balloon"),
    ("PATCH", "/balloon"),
    ("GET", "/balloon/statistics"),
    ("PATCH", "/balloon/statistics"),
    ("PUT", "/logger"),
    ("PUT", "/metrics"),
    ("PATCH", "/vm"),
    ("GET", "/vm/config"),
    ("PUT", "/snapshot/create"),
    ("PUT", "/snapshot/load"),
    ("GET", "/mmds"),
    ("PUT", "/mmds"),
    ("PATCH", "/mmds"),
    ("PUT", "/mmds/config"),
    // hearth extensions
    ("GET", "/metrics/prometheus"),
    ("GET", "/hearth/exit-stats"),
];

/// Firecracker's (method, path) that hearth does not serve yet, and why.
pub const NOT_YET: &[(&str, &str, &str)] = &[
    ("PUT", "/pmem/{id}", "hearth has no virtio-pmem device"),
    ("PATCH", "/pmem/{id}", "hearth has no virtio-pmem device"),
    ("PUT", "/hotplug/memory", "hearth has no virtio-mem device"),
    ("PATCH", "/hotplug/memory", "hearth has no virtio-mem device"),
    ("GET", "/hotplug/memory", "hearth has no virtio-mem device"),
    (
        "PATCH",
        "/balloon/hinting/start",
        "hearth's balloon has no free page hinting",
    ),
    (
        "GET",
        "/balloon/hinting/status",
        "hearth's balloon has no free page hinting",
    ),
    (
        "PATCH",
        "/balloon/hinting/stop",
        "hearth's balloon has no free page hinting",
    ),
];

/// Segments of `path` without the query string, the leading '/' and a trailing '/'.
fn segments(path: &str) -> Vec<&str> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.trim_start_matches('/').split_terminator('/').collect()
}

/// Whether `template` matches `segs`; the `{...}` segment's value if it has one.
fn matches<'a>(template: &str, segs: &[&'a str]) -> Option<Option<&'a str>> {
    let t = segments(template);
    if t.len() != segs.len() {
        return None;
    }
    let mut id = None;
    for (want, got) in t.iter().zip(segs) {
        if want.starts_with('{') {
            id = Some(*got);
        } else if want != got {
            return None;
        }
    }
    Some(id)
}

/// Routes one request. `body` is `None` when the request had no body (no or zero
/// Content-Length).
pub fn route(method: &str, path: &str, body: Option<&[u8]>) -> Result<ApiRequest, ApiFault> {
    let segs = segments(path);
    let found = ROUTES
        .iter()
        .filter(|(m, _)| *m == method)
        .find_map(|&(_, t)| matches(t, &segs).map(|id| (t, id)));
    let Some((template, id)) = found else {
        if let Some((_, t, why)) = NOT_YET
            .iter()
            .find(|(m, t, _)| *m == method && matches(t, &segs).is_some())
        {
            return Err(ApiFault::bad_request(format!(
                "{method} {t} is not supported by hearth yet: {why}."
            )));
        }
        let shown = segs.first().copied().unwrap_or("");
        return Err(ApiFault::bad_request(format!(
            "Invalid request method and/or path: {method} {shown}."
        )));
    };
    let body = match (method, body) {
        ("GET", Some(_)) => return Err(ApiFault::bad_request("GET request cannot have a body.")),
        ("GET", None) => &[][..],
        (m, None) => return Err(ApiFault::bad_request(format!("Empty {m} request."))),
        (_, Some(b)) => b,
    };
    if let Some(id) = id {
        check_id(template.trim_start_matches('/'), id).map_err(ApiFault::bad_request)?;
    }
    build(method, template, id.unwrap_or(""), body)
}

fn same_id(path_id: &str, body_id: &str) -> Result<(), ApiFault> {
    if path_id == body_id {
        Ok(())
    } else {
        Err(ApiFault::bad_request(
            "The id from the path does not match the id from the body!",
        ))
    }
}

fn build(method: &str, template: &str, id: &str, body: &[u8]) -> Result<ApiRequest, ApiFault> {
    use ApiRequest as R;
    Ok(match (method, template) {
        ("GET", "/") => R::GetInstanceInfo,
        ("GET", "/version") => R::GetVersion,
        ("PUT", "/actions") => R::PutActions(parse_body(body)?),
        ("GET", "/machine-config") => R::GetMachineConfig,
        ("PUT", "/machine-config") => R::PutMachineConfig(parse_body(body)?),
        ("PATCH", "/machine-config") => R::PatchMachineConfig(parse_body(body)?),
        ("PUT", "/boot-source") => R::PutBootSource(parse_body(body)?),
        ("PUT", "/cpu-config") => R::PutCpuConfig(parse_body(body)?),
        ("PUT", "/drives/{drive_id}") => {
            let d: crate::models::drive::Drive = parse_body(body)?;
            same_id(id, &d.drive_id)?;
            R::PutDrive(d)
        }
        ("PATCH", "/drives/{drive_id}") => {
            let d: crate::models::drive::PartialDrive = parse_body(body)?;
            same_id(id, &d.drive_id)?;
            R::PatchDrive(d)
        }
        ("PUT", "/network-interfaces/{iface_id}") => {
            let n: crate::models::net::NetworkInterface = parse_body(body)?;
            same_id(id, &n.iface_id)?;
            R::PutNetworkInterface(n)
        }
        ("PATCH", "/network-interfaces/{iface_id}") => {
            let n: crate::models::net::PartialNetworkInterface = parse_body(body)?;
            same_id(id, &n.iface_id)?;
            R::PatchNetworkInterface(n)
        }
        ("PUT", "/vsock") => R::PutVsock(parse_body(body)?),
        ("PUT", "/entropy") => R::PutEntropy(parse_body(body)?),
        ("PUT", "/serial") => R::PutSerial(parse_body(body)?),
        ("GET", "/balloon") => R::GetBalloon,
        ("PUT", "/balloon") => R::PutBalloon(parse_body(body)?),
        ("PATCH", "/balloon") => R::PatchBalloon(parse_body(body)?),
        ("GET", "/balloon/statistics") => R::GetBalloonStatistics,
        ("PATCH", "/balloon/statistics") => R::PatchBalloonStatistics(parse_body(body)?),
        ("PUT", "/logger") => R::PutLogger(parse_body(body)?),
        ("PUT", "/metrics") => R::PutMetrics(parse_body(body)?),
        ("PATCH", "/vm") => R::PatchVm(parse_body(body)?),
        ("GET", "/vm/config") => R::GetVmConfig,
        ("PUT", "/snapshot/create") => R::PutSnapshotCreate(parse_body(body)?),
        ("PUT", "/snapshot/load") => R::PutSnapshotLoad(parse_body(body)?),
        ("GET", "/mmds") => R::GetMmds,
        ("PUT", "/mmds") => R::PutMmds(parse_json(body)?),
        ("PATCH", "/mmds") => R::PatchMmds(parse_json(body)?),
        ("PUT", "/mmds/config") => R::PutMmdsConfig(parse_body(body)?),
        ("GET", "/metrics/prometheus") => R::GetMetricsPrometheus,
        ("GET", "/hearth/exit-stats") => R::GetExitStats,
        (m, t) => {
            // ROUTES lists a route this match does not build: a hearth bug, not the client's.
            return Err(ApiFault::new(500, format!("{m} {t} is listed but not implemented")));
        }
    })
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;

//! Every route with a typical body, and Firecracker's error messages for bad ones.

use serde_json::json;

use super::*;
use crate::models::actions::ActionType;
use crate::models::machine_config::HugePages;
use crate::models::snapshot::SnapshotType;
use crate::models::vm::VmState;

fn ok(method: &str, path: &str, body: serde_json::Value) -> ApiRequest {
    let b = body.to_string();
    route(method, path, Some(b.as_bytes())).unwrap_or_else(|f| panic!("{method} {path}: {f}"))
}

fn fault(method: &str, path: &str, body: &str) -> String {
    let b = (!body.is_empty()).then_some(body.as_bytes());
    let f = route(method, path, b).unwrap_err();
    assert_eq!(f.status, 400, "{method} {path}: {f}");
    f.message
}

#[test]
fn gets() {
    for (path, want) in [
        ("/", ApiRequest::GetInstanceInfo),
        ("/version", ApiRequest::GetVersion),
        ("/machine-config", ApiRequest::GetMachineConfig),
        ("/balloon", ApiRequest::GetBalloon),
        ("/balloon/statistics", ApiRequest::GetBalloonStatistics),
        ("/vm/config", ApiRequest::GetVmConfig),
        ("/mmds", ApiRequest::GetMmds),
        ("/metrics/prometheus", ApiRequest::GetMetricsPrometheus),
        ("/hearth/exit-stats", ApiRequest::GetExitStats),
        ("/machine-config/", ApiRequest::GetMachineConfig),
        ("/version?x=1", ApiRequest::GetVersion),
    ] {
        assert_eq!(route("GET", path, None), Ok(want), "{path}");
    }
}

#[test]
fn machine_config() {
    let r = ok(
        "PUT",
        "/machine-config",
        json!({"vcpu_count": 2, "mem_size_mib": 1024, "smt": false, "track_dirty_pages": true, "huge_pages": "2M"}),
    );
    let ApiRequest::PutMachineConfig(m) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        (m.vcpu_count, m.mem_size_mib, m.track_dirty_pages, m.huge_pages),
        (2, 1024, true, HugePages::Hugetlbfs2M)
    );
    let r = ok("PATCH", "/machine-config", json!({"mem_size_mib": 256}));
    let ApiRequest::PatchMachineConfig(u) = r else {
        panic!("{r:?}")
    };
    assert_eq!((u.mem_size_mib, u.vcpu_count), (Some(256), None));
    assert!(fault("PUT", "/machine-config", r#"{"vcpu_count": 0, "mem_size_mib": 1}"#).contains("vcpu_count"));
    assert!(fault(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 3, "mem_size_mib": 1, "smt": true}"#
    )
    .contains("smt"));
    assert!(fault(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 3, "huge_pages": "2M"}"#
    )
    .contains("mem_size_mib"));
    let m = fault("PUT", "/machine-config", r#"{"vcpu_count": 1}"#);
    assert!(m.contains("missing field `mem_size_mib`"), "{m}");
    let m = fault("PUT", "/machine-config", r#"{"vcpu_count": "two", "mem_size_mib": 1}"#);
    assert!(
        m.starts_with("An error occurred when deserializing the json body of a request: vcpu_count: invalid type"),
        "{m}"
    );
    let m = fault(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 1, "cpus": 4}"#,
    );
    assert!(m.contains("unknown field `cpus`"), "{m}");
    let m = fault("PUT", "/machine-config", r#"{"vcpu_count": 1, "mem_size_mib": -5}"#);
    assert!(m.contains("mem_size_mib: invalid value"), "{m}");
    assert!(fault("PATCH", "/machine-config", r#"{"vcpu_count": 0}"#).contains("vcpu_count"));
}

#[test]
fn boot_source_and_cpu_config() {
    let r = ok(
        "PUT",
        "/boot-source",
        json!({"kernel_image_path": "/k", "boot_args": "console=ttyS0", "initrd_path": "/i"}),
    );
    assert!(
        matches!(r, ApiRequest::PutBootSource(b) if b.kernel_image_path == "/k" && b.initrd_path.as_deref() == Some("/i"))
    );
    assert!(fault("PUT", "/boot-source", r#"{"kernel_image_path": ""}"#).contains("kernel_image_path"));
    let r = ok(
        "PUT",
        "/cpu-config",
        json!({
            "kvm_capabilities": ["171", "!172"],
            "cpuid_modifiers": [{"leaf": "0x1", "subleaf": "0x0", "flags": 0,
                "modifiers": [{"register": "ecx", "bitmap": "0bx0xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]}],
            "msr_modifiers": [{"addr": "0x10a", "bitmap": format!("0b{}", "x".repeat(63) + "1")}]
        }),
    );
    assert!(matches!(r, ApiRequest::PutCpuConfig(c) if c.cpuid_modifiers.len() == 1 && c.msr_modifiers.len() == 1));
    assert!(fault(
        "PUT",
        "/cpu-config",
        r#"{"msr_modifiers": [{"addr": "0x10a", "bitmap": "0b1"}]}"#
    )
    .contains("msr_modifiers.bitmap"));
    assert!(fault("PUT", "/cpu-config", r#"{"kvm_capabilities": ["x"]}"#).contains("kvm_capabilities"));
    assert!(fault(
        "PUT",
        "/cpu-config",
        r#"{"cpuid_modifiers": [{"leaf": "zz", "subleaf": "0", "flags": 0, "modifiers": []}]}"#
    )
    .contains("leaf"));
}

#[test]
fn drives() {
    let r = ok(
        "PUT",
        "/drives/rootfs",
        json!({"drive_id": "rootfs", "path_on_host": "/r.ext4", "is_root_device": true, "is_read_only": false, "cache_type": "Writeback", "io_engine": "Sync", "rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}, "ops": {"size": 10, "one_time_burst": 5, "refill_time": 100}}}),
    );
    let ApiRequest::PutDrive(d) = r else { panic!("{r:?}") };
    assert_eq!(
        d.rate_limiter.and_then(|r| r.ops).and_then(|o| o.one_time_burst),
        Some(5)
    );
    let r = ok(
        "PATCH",
        "/drives/rootfs",
        json!({"drive_id": "rootfs", "path_on_host": "/new.ext4"}),
    );
    assert!(matches!(r, ApiRequest::PatchDrive(p) if p.path_on_host.as_deref() == Some("/new.ext4")));
    assert_eq!(
        fault(
            "PUT",
            "/drives/other",
            r#"{"drive_id": "rootfs", "path_on_host": "/r", "is_root_device": false}"#
        ),
        "The id from the path does not match the id from the body!"
    );
    assert!(fault(
        "PUT",
        "/drives/a-b",
        r#"{"drive_id": "a-b", "path_on_host": "/r", "is_root_device": false}"#
    )
    .contains("alphanumeric"));
    assert!(fault("PUT", "/drives/a", r#"{"drive_id": "a", "is_root_device": false}"#).contains("path_on_host"));
    let m = fault(
        "PUT",
        "/drives/a",
        r#"{"drive_id": "a", "path_on_host": "/r", "is_root_device": false, "rate_limiter": {"bandwidth": {"size": "x", "refill_time": 1}}}"#,
    );
    assert!(m.contains("rate_limiter.bandwidth.size: invalid type"), "{m}");
    assert!(fault(
        "PUT",
        "/drives/a",
        r#"{"drive_id": "a", "path_on_host": "/r", "is_root_device": false, "cache_type": "Fast"}"#
    )
    .contains("cache_type"));
}

#[test]
fn net_vsock_entropy_serial() {
    let r = ok(
        "PUT",
        "/network-interfaces/eth0",
        json!({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02", "mtu": 1500}),
    );
    assert!(matches!(r, ApiRequest::PutNetworkInterface(n) if n.host_dev_name == "tap0" && n.mtu == Some(1500)));
    let r = ok(
        "PATCH",
        "/network-interfaces/eth0",
        json!({"iface_id": "eth0", "rx_rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}),
    );
    assert!(matches!(r, ApiRequest::PatchNetworkInterface(_)));
    assert!(fault(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "zz"}"#
    )
    .contains("guest_mac"));
    assert!(fault(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "tap0", "mtu": 67}"#
    )
    .contains("mtu"));
    assert!(fault(
        "PUT",
        "/network-interfaces/eth0",
        r#"{"iface_id": "eth0", "host_dev_name": "a/b"}"#
    )
    .contains("host_dev_name"));
    assert_eq!(
        fault("PATCH", "/network-interfaces/eth1", r#"{"iface_id": "eth0"}"#),
        "The id from the path does not match the id from the body!"
    );
    let r = ok("PUT", "/vsock", json!({"guest_cid": 3, "uds_path": "/tmp/v.sock"}));
    assert!(matches!(r, ApiRequest::PutVsock(v) if v.guest_cid == 3));
    assert!(fault("PUT", "/vsock", r#"{"guest_cid": 2, "uds_path": "/v"}"#).contains("guest_cid"));
    assert!(matches!(ok("PUT", "/entropy", json!({})), ApiRequest::PutEntropy(e) if e.rate_limiter.is_none()));
    let r = ok(
        "PUT",
        "/serial",
        json!({"serial_out_path": "/tmp/s", "rate_limiter": {"size": 10, "refill_time": 1}}),
    );
    assert!(matches!(r, ApiRequest::PutSerial(_)));
}

#[test]
fn balloon() {
    let r = ok(
        "PUT",
        "/balloon",
        json!({"amount_mib": 64, "deflate_on_oom": true, "stats_polling_interval_s": 1}),
    );
    assert!(matches!(r, ApiRequest::PutBalloon(b) if b.amount_mib == 64 && b.deflate_on_oom));
    assert!(
        matches!(ok("PATCH", "/balloon", json!({"amount_mib": 16})), ApiRequest::PatchBalloon(u) if u.amount_mib == 16)
    );
    let r = ok("PATCH", "/balloon/statistics", json!({"stats_polling_interval_s": 5}));
    assert!(matches!(r, ApiRequest::PatchBalloonStatistics(u) if u.stats_polling_interval_s == 5));
    assert!(fault("PUT", "/balloon", r#"{"amount_mib": 64}"#).contains("deflate_on_oom"));
}

#[test]
fn logger_metrics_actions_vm() {
    let r = ok(
        "PUT",
        "/logger",
        json!({"log_path": "/tmp/log", "level": "warning", "show_level": true}),
    );
    assert!(matches!(r, ApiRequest::PutLogger(l) if l.level == Some(crate::models::logger::LogLevel::Warning)));
    assert!(fault("PUT", "/logger", r#"{"level": "loud"}"#).contains("level"));
    let r = ok(
        "PUT",
        "/metrics",
        json!({"metrics_path": "/tmp/m", "emit_id": true, "properties": {"a": "b"}}),
    );
    assert!(matches!(r, ApiRequest::PutMetrics(m) if m.emit_id && m.properties["a"] == "b"));
    for (a, want) in [
        ("InstanceStart", ActionType::InstanceStart),
        ("SendCtrlAltDel", ActionType::SendCtrlAltDel),
        ("FlushMetrics", ActionType::FlushMetrics),
    ] {
        assert!(
            matches!(ok("PUT", "/actions", json!({"action_type": a})), ApiRequest::PutActions(i) if i.action_type == want)
        );
    }
    assert!(fault("PUT", "/actions", r#"{"action_type": "Reboot"}"#).contains("unknown variant `Reboot`"));
    assert!(
        matches!(ok("PATCH", "/vm", json!({"state": "Paused"})), ApiRequest::PatchVm(v) if v.state == VmState::Paused)
    );
    assert!(fault("PATCH", "/vm", r#"{"state": "paused"}"#).contains("state"));
}

#[test]
fn snapshots() {
    let r = ok(
        "PUT",
        "/snapshot/create",
        json!({"snapshot_type": "Diff", "snapshot_path": "/s", "mem_file_path": "/m"}),
    );
    assert!(matches!(r, ApiRequest::PutSnapshotCreate(s) if s.snapshot_type == SnapshotType::Diff));
    let r = ok(
        "PUT",
        "/snapshot/load",
        json!({"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_path": "/m"}, "resume_vm": true, "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap1"}]}),
    );
    let ApiRequest::PutSnapshotLoad(l) = r else {
        panic!("{r:?}")
    };
    assert!(l.resume_vm && l.memory_backend().is_some_and(|b| b.backend_path == "/m"));
    let r = ok(
        "PUT",
        "/snapshot/load",
        json!({"snapshot_path": "/s", "mem_file_path": "/m"}),
    );
    assert!(matches!(r, ApiRequest::PutSnapshotLoad(l) if l.memory_backend().is_some()));
    assert!(fault("PUT", "/snapshot/load", r#"{"snapshot_path": "/s"}"#)
        .contains("exactly one of mem_file_path and mem_backend"));
    assert!(fault("PUT", "/snapshot/load", r#"{"snapshot_path": "/s", "mem_file_path": "/m", "mem_backend": {"backend_type": "Uffd", "backend_path": "/u"}}"#).contains("exactly one"));
    assert!(fault("PUT", "/snapshot/create", r#"{"snapshot_path": "/s"}"#).contains("mem_file_path"));
}

#[test]
fn mmds() {
    let data = json!({"latest": {"meta-data": {"ami-id": "ami-1234"}}});
    assert_eq!(ok("PUT", "/mmds", data.clone()), ApiRequest::PutMmds(data.clone()));
    assert_eq!(ok("PATCH", "/mmds", data.clone()), ApiRequest::PatchMmds(data));
    let r = ok(
        "PUT",
        "/mmds/config",
        json!({"version": "V2", "network_interfaces": ["eth0"], "ipv4_address": "169.254.170.2"}),
    );
    assert!(matches!(r, ApiRequest::PutMmdsConfig(c) if c.ipv4().octets() == [169, 254, 170, 2]));
    assert!(fault(
        "PUT",
        "/mmds/config",
        r#"{"network_interfaces": [], "ipv4_address": "10.0.0.1"}"#
    )
    .contains("ipv4_address"));
    assert!(fault("PUT", "/mmds", "{").contains("deserializing"));
}

#[test]
fn firecracker_errors() {
    assert_eq!(
        fault("GET", "/nope", ""),
        "Invalid request method and/or path: GET nope."
    );
    assert_eq!(
        fault("DELETE", "/drives/a", ""),
        "Invalid request method and/or path: DELETE drives."
    );
    assert_eq!(
        fault("POST", "/actions", "{}"),
        "Invalid request method and/or path: POST actions."
    );
    assert_eq!(fault("GET", "/", "{}"), "GET request cannot have a body.");
    assert_eq!(fault("PUT", "/actions", ""), "Empty PUT request.");
    assert_eq!(fault("PATCH", "/vm", ""), "Empty PATCH request.");
    assert!(fault("PUT", "/pmem/p0", "{}").contains("not supported by hearth yet: hearth has no virtio-pmem device"));
    assert!(fault("PATCH", "/balloon/hinting/stop", "").contains("free page hinting"));
    assert!(fault("PUT", "/machine-config", "{\"vcpu_count\":1,\"mem_size_mib\":1} x").contains("trailing characters"));
    assert!(fault("PUT", "/machine-config", "[1]").contains("invalid length"));
}

#[test]
fn every_route_builds() {
    // A route listed in ROUTES but missing from `build` answers 500: none may.
    for (m, t) in ROUTES {
        let path = t.replace("{drive_id}", "x").replace("{iface_id}", "x");
        let body = (*m != "GET").then_some(&b"{}"[..]);
        if let Err(f) = route(m, &path, body) {
            assert_eq!(f.status, 400, "{m} {t}: {f}");
            assert!(!f.message.starts_with("Invalid request method"), "{m} {t}: {f}");
        }
    }
}

//! hearth-api.yaml, the router and Firecracker's spec agree:
//! - every operation in hearth-api.yaml is routed and every route is in hearth-api.yaml;
//! - every Firecracker operation is routed or listed in `NOT_YET`;
//! - each model accepts the spec's definition with every property filled in, and serializes
//!   back to a value the spec's schema accepts (so GET replies use the spec's field names).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use api::models::{self, parse_body};
use api::router::{NOT_YET, ROUTES};
use common::schema::Spec;
use serde_json::Value;

fn routes() -> BTreeSet<(String, String)> {
    ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect()
}

#[test]
fn hearth_spec_and_router_agree() {
    let spec: BTreeSet<_> = Spec::hearth().operations().into_iter().collect();
    let routed = routes();
    let unrouted: Vec<_> = spec.difference(&routed).collect();
    let undocumented: Vec<_> = routed.difference(&spec).collect();
    assert!(unrouted.is_empty(), "in hearth-api.yaml but not routed: {unrouted:?}");
    assert!(
        undocumented.is_empty(),
        "routed but not in hearth-api.yaml: {undocumented:?}"
    );
}

#[test]
fn every_firecracker_operation_is_routed_or_not_yet() {
    let routed = routes();
    let not_yet: BTreeSet<_> = NOT_YET.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    for op in Spec::firecracker().operations() {
        let (r, n) = (routed.contains(&op), not_yet.contains(&op));
        assert!(r != n, "{op:?}: routed={r}, NOT_YET={n} (exactly one must hold)");
    }
    // Every NOT_YET entry really is Firecracker's, and answers with its reason.
    let fc: BTreeSet<_> = Spec::firecracker().operations().into_iter().collect();
    for (m, p, why) in NOT_YET {
        assert!(
            fc.contains(&(m.to_string(), p.to_string())),
            "{m} {p} is not a Firecracker path"
        );
        let f = api::router::route(m, &p.replace("{id}", "x"), Some(b"{}")).unwrap_err();
        assert!(f.message.contains(why), "{m} {p}: {f}");
    }
}

type Roundtrip = fn(&[u8]) -> Result<Value, api::ApiFault>;

fn rt<T: serde::de::DeserializeOwned + serde::Serialize + models::Validate>(b: &[u8]) -> Result<Value, api::ApiFault> {
    let v: T = parse_body(b)?;
    Ok(serde_json::to_value(v).unwrap())
}

fn rt_plain<T: serde::de::DeserializeOwned + serde::Serialize>(b: &[u8]) -> Result<Value, api::ApiFault> {
    let v: T = models::parse_json(b)?;
    Ok(serde_json::to_value(v).unwrap())
}

fn config_file(b: &[u8]) -> Result<Value, api::ApiFault> {
    let c = api::parse_config_file(std::str::from_utf8(b).unwrap())?;
    Ok(serde_json::to_value(c).unwrap())
}

/// Makes a generated example pass checks the generator cannot know (exclusive fields, bitmap
/// widths).
fn fix_example(name: &str, v: &mut Value) {
    fn fix_cpu(v: &mut Value) {
        let bits = |n: usize| Value::String(format!("0b{}", "x".repeat(n)));
        v["cpuid_modifiers"][0]["modifiers"][0]["bitmap"] = bits(32);
        v["msr_modifiers"][0]["bitmap"] = bits(64);
        v["reg_modifiers"][0]["bitmap"] = bits(128);
        v["vcpu_features"][0]["bitmap"] = bits(32);
    }
    fn fix_drive(v: &mut Value) {
        v.as_object_mut().unwrap().remove("socket");
    }
    match name {
        "SnapshotLoadParams" => {
            v.as_object_mut().unwrap().remove("mem_file_path");
        }
        "Drive" => fix_drive(v),
        "CpuConfig" => fix_cpu(v),
        "FullVmConfiguration" => {
            fix_cpu(&mut v["cpu-config"]);
            fix_drive(&mut v["drives"][0]);
        }
        _ => {}
    }
}

#[test]
fn models_accept_and_emit_the_spec_definitions() {
    use models::*;
    let cases: &[(&str, Roundtrip)] = &[
        ("MachineConfiguration", rt::<machine_config::MachineConfig>),
        ("BootSource", rt::<boot_source::BootSource>),
        ("CpuConfig", rt::<cpu_config::CpuConfig>),
        ("Drive", rt::<drive::Drive>),
        ("PartialDrive", rt::<drive::PartialDrive>),
        ("NetworkInterface", rt::<net::NetworkInterface>),
        ("PartialNetworkInterface", rt::<net::PartialNetworkInterface>),
        ("Vsock", rt::<vsock::Vsock>),
        ("EntropyDevice", rt::<entropy::EntropyDevice>),
        ("SerialDevice", rt::<serial::SerialDevice>),
        ("Balloon", rt::<balloon::Balloon>),
        ("BalloonUpdate", rt::<balloon::BalloonUpdate>),
        ("BalloonStatsUpdate", rt::<balloon::BalloonStatsUpdate>),
        ("BalloonStats", rt_plain::<balloon::BalloonStats>),
        ("Logger", rt::<logger::Logger>),
        ("Metrics", rt::<metrics::Metrics>),
        ("InstanceActionInfo", rt::<actions::InstanceActionInfo>),
        ("Vm", rt::<vm::Vm>),
        ("SnapshotCreateParams", rt::<snapshot::SnapshotCreateParams>),
        ("SnapshotLoadParams", rt::<snapshot::SnapshotLoadParams>),
        ("MmdsConfig", rt::<mmds::MmdsConfig>),
        ("InstanceInfo", rt_plain::<instance::InstanceInfo>),
        ("FirecrackerVersion", rt_plain::<instance::Version>),
        ("FullVmConfiguration", config_file),
    ];
    let spec = Spec::hearth();
    for (name, roundtrip) in cases {
        let def = spec.definition(name);
        let mut example = spec.maximal_example(def, name);
        fix_example(name, &mut example);
        let back =
            roundtrip(example.to_string().as_bytes()).unwrap_or_else(|f| panic!("{name}: {example} rejected: {f}"));
        let errors = spec.check(&back, def);
        assert!(errors.is_empty(), "{name}: {back} does not match the spec: {errors:?}");
        assert_eq!(
            back, example,
            "{name}: a field was lost or changed on the way through the model"
        );
    }
}

#[test]
fn machine_config_defaults_match_the_spec_description() {
    // "When called before the PUT operation, it will return the default values for the vCPU
    // count (=1), memory size (=128 MiB)."
    let v = serde_json::to_value(models::machine_config::MachineConfig::default()).unwrap();
    assert_eq!(
        (v["vcpu_count"].as_u64(), v["mem_size_mib"].as_u64()),
        (Some(1), Some(128))
    );
    let spec = Spec::hearth();
    assert!(spec.check(&v, spec.definition("MachineConfiguration")).is_empty());
}

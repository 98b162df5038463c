//! Firecracker's resources (the API's pre-boot configuration) ↔ hearth's [`VmConfig`].

use std::path::PathBuf;

use api::models::net::parse_mac;
use api::models::vm_config::FullVmConfig;
use api::ApiFault;

use crate::config::{
    default_mac, DriveConfig, NetBackend, NetConfig, NetLimit, VmConfig, VsockConfig, DEFAULT_CMDLINE,
};
use crate::loader::BootProtocol;

use super::*;

/// A Firecracker token bucket (`size` tokens per `refill_time` ms) as a rate per second.
/// Firecracker's per-direction limiter as bytes and frames a second.
fn net_limit(rl: Option<&api::models::rate_limiter::RateLimiter>) -> NetLimit {
    NetLimit {
        bps: rl.and_then(|r| r.bandwidth.as_ref()).map_or(0, per_second),
        pps: rl.and_then(|r| r.ops.as_ref()).map_or(0, per_second),
    }
}

/// The other way, for `GET /vm/config`: a one-second bucket of the configured rates.
fn api_limiter(l: NetLimit) -> Option<api::models::rate_limiter::RateLimiter> {
    use api::models::rate_limiter::{RateLimiter, TokenBucket};
    let bucket = |n: u64| {
        (n > 0).then_some(TokenBucket {
            size: n,
            one_time_burst: None,
            refill_time: 1000,
        })
    };
    (l != NetLimit::default()).then(|| RateLimiter {
        bandwidth: bucket(l.bps),
        ops: bucket(l.pps),
    })
}

pub(super) fn per_second(b: &api::models::rate_limiter::TokenBucket) -> u64 {
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
            // Firecracker's API has no O_DIRECT setting (its cache_type is about flushes).
            direct: false,
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
            rx_limit: net_limit(iface.rx_rate_limiter.as_ref()),
            tx_limit: net_limit(iface.tx_rate_limiter.as_ref()),
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
        serial_limit: full
            .serial
            .as_ref()
            .and_then(|s| s.rate_limiter.as_ref())
            // As in Firecracker, an empty bucket (size or refill_time 0) is no limit.
            .filter(|b| b.size > 0 && b.refill_time > 0)
            .map(|b| crate::config::SerialLimit {
                bytes_per_sec: per_second(b),
                burst: b.size.saturating_add(b.one_time_burst.unwrap_or(0)),
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
                rx_rate_limiter: api_limiter(n.rx_limit),
                tx_rate_limiter: api_limiter(n.tx_limit),
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

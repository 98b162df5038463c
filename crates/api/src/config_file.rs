//! Firecracker's `--config-file`: the whole pre-boot configuration in one JSON document,
//! parsed into the same models the API routes use.

use crate::models::vm_config::FullVmConfig;
use crate::models::{parse_json, Validate};
use crate::ApiFault;

/// The `--config-file` document (keys: boot-source, drives, machine-config,
/// network-interfaces, vsock, balloon, entropy, logger, metrics, mmds-config, cpu-config,
/// serial).
pub type VmmConfigFile = FullVmConfig;

/// Parses and validates a config file. `boot-source` is required (a VM started from a config
/// file boots at once); everything else is optional.
pub fn parse_config_file(json: &str) -> Result<VmmConfigFile, ApiFault> {
    let config: VmmConfigFile = parse_json(json.as_bytes())?;
    if config.boot_source.is_none() {
        return Err(ApiFault::bad_request("config file: missing field `boot-source`."));
    }
    config
        .validate()
        .map_err(|e| ApiFault::bad_request(format!("config file: {e}")))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecracker_style_config() {
        let c = parse_config_file(
            r#"{
              "boot-source": {"kernel_image_path": "vmlinux", "boot_args": "console=ttyS0 reboot=k panic=1"},
              "drives": [{"drive_id": "rootfs", "path_on_host": "rootfs.ext4", "is_root_device": true, "is_read_only": false}],
              "machine-config": {"vcpu_count": 2, "mem_size_mib": 1024, "smt": false},
              "network-interfaces": [{"iface_id": "eth0", "guest_mac": "AA:FC:00:00:00:01", "host_dev_name": "tap0"}],
              "vsock": {"guest_cid": 3, "uds_path": "/tmp/v.sock"},
              "balloon": {"amount_mib": 0, "deflate_on_oom": true},
              "entropy": {},
              "logger": {"level": "Debug", "log_path": "/tmp/fc.log"},
              "metrics": {"metrics_path": "/tmp/m.fifo"},
              "mmds-config": {"network_interfaces": ["eth0"], "version": "V2"},
              "cpu-config": {"kvm_capabilities": ["!56"]}
            }"#,
        )
        .unwrap();
        assert_eq!(c.machine_config.map(|m| m.vcpu_count), Some(2));
        assert_eq!(c.drives[0].drive_id, "rootfs");
        assert_eq!(c.network_interfaces[0].host_dev_name, "tap0");
    }

    #[test]
    fn bad_configs_say_what_and_where() {
        let msg = |j: &str| parse_config_file(j).unwrap_err().message;
        assert!(msg("{}").contains("boot-source"));
        assert!(
            msg("{\"boot-source\": {\"kernel_image_path\": \"k\"}, \"drive\": []}").contains("unknown field `drive`")
        );
        let m = msg(
            r#"{"boot-source": {"kernel_image_path": "k"}, "drives": [{"drive_id": "a", "is_root_device": "yes", "path_on_host": "x"}]}"#,
        );
        assert!(m.contains("drives[0].is_root_device: invalid type"), "{m}");
        let m = msg(
            r#"{"boot-source": {"kernel_image_path": "k"}, "machine-config": {"vcpu_count": 0, "mem_size_mib": 8}}"#,
        );
        assert!(m.starts_with("config file: machine-config: vcpu_count"), "{m}");
        let d = r#"{"drive_id": "a", "is_root_device": false, "path_on_host": "x"}"#;
        let m = msg(&format!(
            r#"{{"boot-source": {{"kernel_image_path": "k"}}, "drives": [{d}, {d}]}}"#
        ));
        assert!(m.contains("'a' is used twice"), "{m}");
        assert!(msg("not json").contains("deserializing"));
    }
}

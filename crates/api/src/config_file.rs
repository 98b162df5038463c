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

//! The whole pre-boot configuration in one document: GET /vm/config's reply and the
//! `--config-file` JSON (Firecracker's `FullVmConfiguration` / `VmmConfig`, same keys).

use serde::{Deserialize, Serialize};

use super::balloon::Balloon;
use super::boot_source::BootSource;
use super::cpu_config::CpuConfig;
use super::drive::Drive;
use super::entropy::EntropyDevice;
use super::logger::Logger;
use super::machine_config::MachineConfig;
use super::metrics::Metrics;
use super::mmds::MmdsConfig;
use super::net::NetworkInterface;
use super::serial::SerialDevice;
use super::vsock::Vsock;
use super::Validate;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullVmConfig {
    #[serde(rename = "boot-source", default, skip_serializing_if = "Option::is_none")]
    pub boot_source: Option<BootSource>,
    #[serde(rename = "machine-config", default, skip_serializing_if = "Option::is_none")]
    pub machine_config: Option<MachineConfig>,
    #[serde(rename = "cpu-config", default, skip_serializing_if = "Option::is_none")]
    pub cpu_config: Option<CpuConfig>,
    #[serde(default)]
    pub drives: Vec<Drive>,
    #[serde(rename = "network-interfaces", default)]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<Vsock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<Balloon>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<EntropyDevice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(rename = "mmds-config", default, skip_serializing_if = "Option::is_none")]
    pub mmds_config: Option<MmdsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<SerialDevice>,
}

impl Validate for FullVmConfig {
    fn validate(&self) -> Result<(), String> {
        let prefix = |key: &str, r: Result<(), String>| r.map_err(|e| format!("{key}: {e}"));
        prefix("boot-source", self.boot_source.validate())?;
        prefix("machine-config", self.machine_config.validate())?;
        prefix("cpu-config", self.cpu_config.validate())?;
        prefix("drives", self.drives.validate())?;
        prefix("network-interfaces", self.network_interfaces.validate())?;
        prefix("vsock", self.vsock.validate())?;
        prefix("balloon", self.balloon.validate())?;
        prefix("entropy", self.entropy.validate())?;
        prefix("logger", self.logger.validate())?;
        prefix("metrics", self.metrics.validate())?;
        prefix("mmds-config", self.mmds_config.validate())?;
        prefix("serial", self.serial.validate())?;
        for (i, d) in self.drives.iter().enumerate() {
            if self.drives[..i].iter().any(|o| o.drive_id == d.drive_id) {
                return Err(format!("drives: drive_id '{}' is used twice.", d.drive_id));
            }
        }
        for (i, n) in self.network_interfaces.iter().enumerate() {
            if self.network_interfaces[..i].iter().any(|o| o.iface_id == n.iface_id) {
                return Err(format!("network-interfaces: iface_id '{}' is used twice.", n.iface_id));
            }
        }
        Ok(())
    }
}

//! `/mmds` (the metadata store: free-form JSON) and `/mmds/config`.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{check_id, Validate};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MmdsVersion {
    #[default]
    V1,
    V2,
}

/// The address the guest reaches the MMDS at unless configured.
pub const DEFAULT_MMDS_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmdsConfig {
    #[serde(default)]
    pub version: MmdsVersion,
    pub network_interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<Ipv4Addr>,
    #[serde(default)]
    pub imds_compat: bool,
}

impl MmdsConfig {
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4_address.unwrap_or(DEFAULT_MMDS_IPV4)
    }
}

impl Validate for MmdsConfig {
    fn validate(&self) -> Result<(), String> {
        for id in &self.network_interfaces {
            check_id("network_interfaces", id)?;
        }
        if let Some(ip) = self.ipv4_address {
            // The spec's pattern: 169.254.[1-254].[0-255].
            let o = ip.octets();
            if o[0] != 169 || o[1] != 254 || o[2] == 0 || o[2] == 255 {
                return Err(format!(
                    "ipv4_address: {ip} is not in 169.254.1.0-169.254.254.255 (link-local)."
                ));
            }
        }
        Ok(())
    }
}

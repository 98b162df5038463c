//! `/network-interfaces/{iface_id}`: virtio-net interfaces on host tap devices.

use serde::{Deserialize, Serialize};

use super::rate_limiter::RateLimiter;
use super::{check_id, Validate};

/// `NetworkInterface` (PUT body, and an element of GET /vm/config's `network-interfaces`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    /// `aa:bb:cc:dd:ee:ff`; see [`parse_mac`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `aa:bb:cc:dd:ee:ff` (hex, any case) → bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl Validate for NetworkInterface {
    fn validate(&self) -> Result<(), String> {
        check_id("iface_id", &self.iface_id)?;
        // IFNAMSIZ is 16 including the NUL.
        if self.host_dev_name.is_empty()
            || self.host_dev_name.len() > 15
            || self.host_dev_name.contains(['/', ' ', '\0'])
        {
            return Err(format!(
                "host_dev_name '{}': not a valid interface name (1-15 characters, no '/' or spaces).",
                self.host_dev_name.escape_debug()
            ));
        }
        if let Some(m) = &self.guest_mac {
            match parse_mac(m) {
                Some(b) if b[0] & 1 == 0 => {}
                Some(_) => return Err(format!("guest_mac '{m}': a multicast address cannot be a NIC's MAC.")),
                None => return Err(format!("guest_mac '{}': expected aa:bb:cc:dd:ee:ff.", m.escape_debug())),
            }
        }
        if let Some(mtu) = self.mtu {
            if mtu < 68 {
                return Err(format!("mtu: {mtu} is out of range [68, 65535]."));
            }
        }
        Ok(())
    }
}

/// PATCH /network-interfaces/{iface_id}: new rate limiters after boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialNetworkInterface {
    pub iface_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

impl Validate for PartialNetworkInterface {
    fn validate(&self) -> Result<(), String> {
        check_id("iface_id", &self.iface_id)
    }
}

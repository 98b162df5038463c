//! `/entropy`: the virtio-rng device.

use serde::{Deserialize, Serialize};

use super::rate_limiter::RateLimiter;
use super::Validate;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

impl Validate for EntropyDevice {}

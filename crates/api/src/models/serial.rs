//! `/serial`: where the guest's serial console output goes.

use serde::{Deserialize, Serialize};

use super::rate_limiter::TokenBucket;
use super::{check_path, Validate};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_out_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<TokenBucket>,
}

impl Validate for SerialDevice {
    fn validate(&self) -> Result<(), String> {
        self.serial_out_path
            .as_deref()
            .map_or(Ok(()), |p| check_path("serial_out_path", p))
    }
}

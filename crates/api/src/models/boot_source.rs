//! `/boot-source`: the guest kernel, initrd and command line.

use serde::{Deserialize, Serialize};

use super::{check_path, Validate};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

impl Validate for BootSource {
    fn validate(&self) -> Result<(), String> {
        check_path("kernel_image_path", &self.kernel_image_path)?;
        if let Some(p) = &self.initrd_path {
            check_path("initrd_path", p)?;
        }
        Ok(())
    }
}

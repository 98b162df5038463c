//! `/vsock`: the virtio-vsock device and its host Unix socket.

use serde::{Deserialize, Serialize};

use super::{check_id, check_path, Validate};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    pub guest_cid: u32,
    pub uds_path: String,
    /// Deprecated in Firecracker; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
}

impl Validate for Vsock {
    fn validate(&self) -> Result<(), String> {
        // 0-2 are the hypervisor, local and host CIDs; u32::MAX is VMADDR_CID_ANY.
        if self.guest_cid < 3 || self.guest_cid == u32::MAX {
            return Err(format!("guest_cid: {} is reserved (use 3 or more).", self.guest_cid));
        }
        if let Some(id) = &self.vsock_id {
            check_id("vsock_id", id)?;
        }
        check_path("uds_path", &self.uds_path)
    }
}

//! `/drives/{drive_id}`: block devices (virtio-blk on a host file, or vhost-user-blk).

use serde::{Deserialize, Serialize};

use super::rate_limiter::RateLimiter;
use super::{check_id, check_path, Validate};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    #[default]
    Unsafe,
    Writeback,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    #[default]
    Sync,
    Async,
}

/// `Drive` (PUT body, and an element of GET /vm/config's `drives`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    pub is_root_device: bool,
    #[serde(default)]
    pub cache_type: CacheType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// vhost-user-blk backend socket (instead of `path_on_host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

impl Validate for Drive {
    fn validate(&self) -> Result<(), String> {
        check_id("drive_id", &self.drive_id)?;
        match (&self.path_on_host, &self.socket) {
            (Some(p), None) => check_path("path_on_host", p),
            (None, Some(s)) => {
                if self.is_read_only.is_some() || self.io_engine.is_some() || self.rate_limiter.is_some() {
                    return Err(format!(
                        "drive '{}': is_read_only, io_engine and rate_limiter are for virtio-block (path_on_host), not vhost-user (socket).",
                        self.drive_id
                    ));
                }
                check_path("socket", s)
            }
            (Some(_), Some(_)) => Err(format!(
                "drive '{}': give path_on_host (virtio-block) or socket (vhost-user-block), not both.",
                self.drive_id
            )),
            (None, None) => Err(format!(
                "drive '{}': path_on_host is required (or socket for vhost-user-block).",
                self.drive_id
            )),
        }
    }
}

/// PATCH /drives/{drive_id}: a new backing file and/or rate limiter after boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialDrive {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

impl Validate for PartialDrive {
    fn validate(&self) -> Result<(), String> {
        check_id("drive_id", &self.drive_id)?;
        if let Some(p) = &self.path_on_host {
            check_path("path_on_host", p)?;
        }
        Ok(())
    }
}

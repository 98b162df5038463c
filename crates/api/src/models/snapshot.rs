//! `/snapshot/create` and `/snapshot/load`.

use serde::{Deserialize, Serialize};

use super::{check_id, check_path, Validate};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    #[default]
    Full,
    Diff,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateParams {
    pub snapshot_path: String,
    pub mem_file_path: String,
    #[serde(default)]
    pub snapshot_type: SnapshotType,
}

impl Validate for SnapshotCreateParams {
    fn validate(&self) -> Result<(), String> {
        check_path("snapshot_path", &self.snapshot_path)?;
        check_path("mem_file_path", &self.mem_file_path)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    File,
    Uffd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    pub backend_type: MemoryBackendType,
    pub backend_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockOverride {
    pub uds_path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotHugePages {
    Snapshot,
    None,
    Transparent,
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoadParams {
    pub snapshot_path: String,
    /// Deprecated form of `mem_backend: {backend_type: File, ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_file_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_backend: Option<MemoryBackend>,
    /// Deprecated alias of `track_dirty_pages`.
    #[serde(default)]
    pub enable_diff_snapshots: bool,
    #[serde(default)]
    pub track_dirty_pages: bool,
    #[serde(default)]
    pub resume_vm: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
    #[serde(default)]
    pub clock_realtime: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<SnapshotHugePages>,
}

impl SnapshotLoadParams {
    /// The memory backend, whichever way it was given (`mem_file_path` means a File backend).
    pub fn memory_backend(&self) -> Option<MemoryBackend> {
        self.mem_backend.clone().or_else(|| {
            self.mem_file_path.as_ref().map(|p| MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: p.clone(),
            })
        })
    }
}

impl Validate for SnapshotLoadParams {
    fn validate(&self) -> Result<(), String> {
        check_path("snapshot_path", &self.snapshot_path)?;
        match (&self.mem_file_path, &self.mem_backend) {
            (Some(p), None) => check_path("mem_file_path", p)?,
            (None, Some(b)) => check_path("mem_backend.backend_path", &b.backend_path)?,
            _ => return Err("exactly one of mem_file_path and mem_backend must be given.".to_string()),
        }
        for o in &self.network_overrides {
            check_id("network_overrides.iface_id", &o.iface_id)?;
        }
        if let Some(v) = &self.vsock_override {
            check_path("vsock_override.uds_path", &v.uds_path)?;
        }
        Ok(())
    }
}

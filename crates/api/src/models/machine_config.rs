//! `/machine-config`: vCPUs, memory, SMT, huge pages, CPU template.

use serde::{Deserialize, Serialize};

use super::Validate;

/// The most vCPUs hearth accepts (Firecracker: 32; hearth's MP table allows 254).
pub const MAX_VCPUS: u8 = 254;

/// Firecracker's deprecated static CPU templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuTemplate {
    C3,
    T2,
    T2S,
    T2CL,
    T2A,
    V1N1,
    None,
}

/// How guest memory is backed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    #[default]
    None,
    Transparent,
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// `MachineConfiguration` (PUT body and GET reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: u64,
    #[serde(default)]
    pub smt: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    #[serde(default)]
    pub track_dirty_pages: bool,
    #[serde(default)]
    pub huge_pages: HugePages,
}

impl Default for MachineConfig {
    /// Firecracker's defaults: 1 vCPU, 128 MiB.
    fn default() -> Self {
        MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            cpu_template: None,
            track_dirty_pages: false,
            huge_pages: HugePages::None,
        }
    }
}

/// PATCH /machine-config: any subset of the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_count: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_size_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

impl MachineConfigUpdate {
    /// `base` with this update's fields applied (then validate the result).
    pub fn apply(&self, base: &MachineConfig) -> MachineConfig {
        MachineConfig {
            vcpu_count: self.vcpu_count.unwrap_or(base.vcpu_count),
            mem_size_mib: self.mem_size_mib.unwrap_or(base.mem_size_mib),
            smt: self.smt.unwrap_or(base.smt),
            cpu_template: self.cpu_template.or(base.cpu_template),
            track_dirty_pages: self.track_dirty_pages.unwrap_or(base.track_dirty_pages),
            huge_pages: self.huge_pages.unwrap_or(base.huge_pages),
        }
    }
}

impl Validate for MachineConfig {
    fn validate(&self) -> Result<(), String> {
        if self.vcpu_count == 0 || self.vcpu_count > MAX_VCPUS {
            return Err(format!(
                "vcpu_count: {} is out of range [1, {MAX_VCPUS}].",
                self.vcpu_count
            ));
        }
        if self.smt && self.vcpu_count > 1 && self.vcpu_count % 2 == 1 {
            return Err(format!(
                "vcpu_count: {} must be 1 or even when smt is enabled.",
                self.vcpu_count
            ));
        }
        if self.mem_size_mib == 0 {
            return Err("mem_size_mib: must be at least 1.".into());
        }
        if self.huge_pages == HugePages::Hugetlbfs2M && self.mem_size_mib % 2 == 1 {
            return Err(format!(
                "mem_size_mib: {} must be a multiple of 2 with huge_pages 2M.",
                self.mem_size_mib
            ));
        }
        Ok(())
    }
}

impl Validate for MachineConfigUpdate {
    fn validate(&self) -> Result<(), String> {
        // Field-wise checks; cross-field ones run on the merged config in the backend.
        let probe = self.apply(&MachineConfig {
            smt: false,
            huge_pages: HugePages::None,
            ..MachineConfig::default()
        });
        probe.validate()
    }
}

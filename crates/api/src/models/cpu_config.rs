//! `/cpu-config`: custom CPU templates (CPUID, MSR, KVM capability modifiers).
//!
//! Numbers arrive as strings ("0x10a", "0b1", "266") and bitmaps as "0b" + '0'/'1'/'x'
//! characters; both are checked here so the backend gets well-formed templates.

use serde::{Deserialize, Serialize};

use super::Validate;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuidRegister {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuidRegisterModifier {
    pub register: CpuidRegister,
    pub bitmap: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuidLeafModifier {
    pub leaf: String,
    pub subleaf: String,
    pub flags: i32,
    pub modifiers: Vec<CpuidRegisterModifier>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MsrModifier {
    pub addr: String,
    pub bitmap: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmRegisterModifier {
    pub addr: String,
    pub bitmap: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuFeatures {
    pub index: i32,
    pub bitmap: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kvm_capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpuid_modifiers: Vec<CpuidLeafModifier>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub msr_modifiers: Vec<MsrModifier>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reg_modifiers: Vec<ArmRegisterModifier>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vcpu_features: Vec<VcpuFeatures>,
}

/// "0x1f", "0b101" or "31" → the number.
pub fn parse_number(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(b) = s.strip_prefix("0b") {
        u64::from_str_radix(b, 2).ok()
    } else {
        s.parse().ok()
    }
}

/// "0b" followed by `bits` characters out of '0', '1', 'x' ('_' separators allowed).
fn check_bitmap(field: &str, s: &str, bits: usize) -> Result<(), String> {
    let body = s.strip_prefix("0b").unwrap_or("");
    let digits: Vec<char> = body.chars().filter(|&c| c != '_').collect();
    if s.starts_with("0b") && digits.len() == bits && digits.iter().all(|c| matches!(c, '0' | '1' | 'x')) {
        Ok(())
    } else {
        Err(format!(
            "{field} '{}': expected \"0b\" and {bits} characters of 0, 1 or x.",
            s.escape_debug()
        ))
    }
}

fn check_number(field: &str, s: &str, max: u64) -> Result<(), String> {
    match parse_number(s) {
        Some(n) if n <= max => Ok(()),
        _ => Err(format!(
            "{field} '{}': expected a number (0x.., 0b.. or decimal) up to {max:#x}.",
            s.escape_debug()
        )),
    }
}

impl Validate for CpuConfig {
    fn validate(&self) -> Result<(), String> {
        for cap in &self.kvm_capabilities {
            if cap.strip_prefix('!').unwrap_or(cap).parse::<u32>().is_err() {
                return Err(format!(
                    "kvm_capabilities '{}': expected a number, optionally prefixed by '!'.",
                    cap.escape_debug()
                ));
            }
        }
        for leaf in &self.cpuid_modifiers {
            check_number("cpuid_modifiers.leaf", &leaf.leaf, u32::MAX.into())?;
            check_number("cpuid_modifiers.subleaf", &leaf.subleaf, u32::MAX.into())?;
            for m in &leaf.modifiers {
                check_bitmap("cpuid_modifiers.modifiers.bitmap", &m.bitmap, 32)?;
            }
        }
        for m in &self.msr_modifiers {
            check_number("msr_modifiers.addr", &m.addr, u32::MAX.into())?;
            check_bitmap("msr_modifiers.bitmap", &m.bitmap, 64)?;
        }
        for m in &self.reg_modifiers {
            check_number("reg_modifiers.addr", &m.addr, u64::MAX)?;
            check_bitmap("reg_modifiers.bitmap", &m.bitmap, 128)?;
        }
        for f in &self.vcpu_features {
            check_bitmap("vcpu_features.bitmap", &f.bitmap, 32)?;
        }
        Ok(())
    }
}

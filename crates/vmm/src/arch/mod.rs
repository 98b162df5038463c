//! x86_64 machine description: memory layout, boot protocols, CPUID, MSRs, MP table, ACPI.
//! Everything here is pure data construction over guest memory; no vCPU threads, no devices.

pub mod acpi;
pub mod boot;
pub mod cpu_features;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;

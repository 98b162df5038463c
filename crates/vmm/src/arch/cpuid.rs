//! The CPUID a vCPU sees: KVM's supported set (already limited to what host and KVM can run),
//! with hearth's topology, the hypervisor bit, and the KVM paravirtual features filtered by what
//! the host can actually complete (see [`crate::host::HostProfile`]).

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

use crate::host::HostProfile;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_KVM_FEATURES: u32 = 0x4000_0001;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// KVM paravirtual feature bits (Documentation/virt/kvm/x86/cpuid.rst) whose use needs a
/// working hypercall (`vmcall`/`vmmcall` from guest ring 0).
pub const KVM_FEATURE_PV_UNHALT: u32 = 1 << 7;
pub const KVM_FEATURE_PV_SEND_IPI: u32 = 1 << 11;
pub const KVM_FEATURE_PV_SCHED_YIELD: u32 = 1 << 13;
pub const KVM_FEATURE_HC_MAP_GPA_RANGE: u32 = 1 << 16;
pub const HYPERCALL_FEATURES: u32 =
    KVM_FEATURE_PV_UNHALT | KVM_FEATURE_PV_SEND_IPI | KVM_FEATURE_PV_SCHED_YIELD | KVM_FEATURE_HC_MAP_GPA_RANGE;

/// Number of bits needed for `n` distinct IDs.
fn id_bits(n: u32) -> u32 {
    32 - n.saturating_sub(1).leading_zeros()
}

/// Adjusts one entry for vCPU `id` of `ncpus` (one socket, one thread per core).
fn filter_entry(e: &mut kvm_cpuid_entry2, id: u8, ncpus: u8, host: &HostProfile) {
    let n = u32::from(ncpus);
    match e.function {
        LEAF_FEATURES => {
            // EBX: APIC ID [31:24], logical processors per package [23:16], CLFLUSH size [15:8].
            e.ebx = (u32::from(id) << 24) | (n << 16) | (8 << 8);
            e.ecx |= ECX_HYPERVISOR;
            if ncpus > 1 {
                e.edx |= EDX_HTT;
            } else {
                e.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE => {
            // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1.
            e.eax &= 0x3fff;
            if e.eax & 0x1f != 0 {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { n - 1 } else { 0 };
                e.eax |= ((n - 1) << 26) | (sharing << 14);
            }
        }
        LEAF_PMU => {
            // No virtual PMU: the guest skips perf counter set-up.
            (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0);
        }
        LEAF_TOPOLOGY | LEAF_EXT_TOPOLOGY => {
            e.edx = u32::from(id);
            match e.index {
                0 => {
                    // SMT level: one thread per core.
                    (e.eax, e.ebx, e.ecx) = (0, 1, 1 << 8);
                }
                1 => {
                    // Core level: all vCPUs in one package.
                    (e.eax, e.ebx, e.ecx) = (id_bits(n), n, 1 | (2 << 8));
                }
                i => {
                    (e.eax, e.ebx, e.ecx) = (0, 0, i);
                }
            }
        }
        LEAF_KVM_FEATURES if !host.hypercalls_work => {
            e.eax &= !HYPERCALL_FEATURES;
        }
        _ => {}
    }
}

/// Filters KVM's supported CPUID for vCPU `id` of `ncpus`.
pub fn filter(cpuid: &mut CpuId, id: u8, ncpus: u8, host: &HostProfile) {
    for e in cpuid.as_mut_slice() {
        filter_entry(e, id, ncpus, host);
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: !0,
            ebx: !0,
            ecx: 0,
            edx: 0,
            ..Default::default()
        }
    }

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let host = HostProfile::default();
        let mut e = entry(1, 0);
        filter_entry(&mut e, 3, 4, &host);
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e.edx & EDX_HTT, 0);
        let mut one = entry(1, 0);
        filter_entry(&mut one, 0, 1, &host);
        assert_eq!(one.edx & EDX_HTT, 0);
    }

    #[test]
    fn topology_leaf_describes_cores() {
        let host = HostProfile::default();
        let mut core = entry(0xb, 1);
        filter_entry(&mut core, 1, 3, &host);
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 3, 0x201, 1));
        let mut smt = entry(0xb, 0);
        filter_entry(&mut smt, 1, 3, &host);
        assert_eq!((smt.eax, smt.ebx), (0, 1));
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(5), 3);
    }

    #[test]
    fn hypercall_features_hidden_only_where_hypercalls_hang() {
        let mut e = entry(LEAF_KVM_FEATURES, 0);
        filter_entry(
            &mut e,
            0,
            1,
            &HostProfile {
                hypercalls_work: true,
                ..Default::default()
            },
        );
        assert_eq!(e.eax, !0);
        filter_entry(
            &mut e,
            0,
            1,
            &HostProfile {
                hypercalls_work: false,
                ..Default::default()
            },
        );
        assert_eq!(e.eax & HYPERCALL_FEATURES, 0);
        assert_ne!(e.eax & 1, 0, "kvmclock stays");
    }

    #[test]
    fn pmu_is_hidden() {
        let mut e = entry(LEAF_PMU, 0);
        filter_entry(&mut e, 0, 1, &HostProfile::default());
        assert_eq!(e.eax, 0);
    }
}

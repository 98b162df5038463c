//! What kind of KVM host this is, detected rather than assumed.
//!
//! On a PVM host (the `kvm_pvm` module: guest ring 0 is run by KVM's instruction emulator) a few
//! things differ from VMX/SVM KVM, and hearth adapts to them here, in one place:
//! - hypercalls (`vmcall`) from guest ring 0 hang the vCPU inside the host kernel, so the KVM
//!   paravirtual features that make Linux issue them are hidden in CPUID leaf 0x40000001;
//! - CPUID feature bits are not honoured, so the guest is steered away from instructions the
//!   emulator cannot run (xsave family, popcnt, clac/stac) with its own command-line switches;
//!   anything it still executes is completed by the `fixup` crate at the exit.
//!
//! See docs/pvm.md for the measurements behind these choices.

use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostProfile {
    /// Human-readable name of the host type, for logs and `--stats`.
    pub kind: &'static str,
    /// Guest `vmcall`/`vmmcall` from ring 0 complete (false: they hang the vCPU).
    pub hypercalls_work: bool,
    /// Kernel command-line switches a Linux guest needs on this host.
    pub guest_cmdline: &'static [&'static str],
}

impl Default for HostProfile {
    fn default() -> Self {
        Self {
            kind: "kvm",
            hypercalls_work: true,
            guest_cmdline: &[],
        }
    }
}

/// Kernel switches for a PVM host: no XSAVE (xrstor cannot be emulated), no POPCNT and no SMAP
/// (popcnt/clac/stac are emulation failures; each fix-up round trip costs ~40 µs and SMAP puts
/// two of them on every system call). `clearcpuid=` rather than `noxsave`: Linux 6.1 parses
/// `noxsave` itself without registering it, so the generic parser hands the bare word to init
/// as an argument.
const PVM_GUEST_CMDLINE: &[&str] = &["clearcpuid=xsave,popcnt,smap"];

impl HostProfile {
    /// Detects the host from sysfs. `HEARTH_HOST=kvm|pvm` overrides detection (for testing a
    /// profile on the other kind of host).
    pub fn detect() -> Self {
        match std::env::var("HEARTH_HOST").as_deref() {
            Ok("pvm") => Self::pvm(),
            Ok("kvm") => Self::default(),
            _ if Path::new("/sys/module/kvm_pvm").exists() => Self::pvm(),
            _ => Self::default(),
        }
    }

    pub fn pvm() -> Self {
        Self {
            kind: "kvm-pvm",
            hypercalls_work: false,
            guest_cmdline: PVM_GUEST_CMDLINE,
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    #[test]
    fn profiles_differ_only_where_pvm_needs_it() {
        let k = HostProfile::default();
        assert!(k.hypercalls_work && k.guest_cmdline.is_empty());
        let p = HostProfile::pvm();
        assert!(!p.hypercalls_work);
        assert!(p.guest_cmdline.iter().any(|s| s.contains("xsave")));
    }

    #[test]
    fn detection_matches_sysfs() {
        if std::env::var_os("HEARTH_HOST").is_none() {
            let pvm = Path::new("/sys/module/kvm_pvm").exists();
            assert_eq!(HostProfile::detect().hypercalls_work, !pvm);
        }
    }
}

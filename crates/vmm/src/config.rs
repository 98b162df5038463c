//! What a user asks for: the machine configuration, validated before anything is built.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use devices::virtio::balloon::BalloonConfig;

use crate::loader::BootProtocol;

pub use devices::virtio::net::{PortForward, Protocol as ForwardProtocol};

/// hearth's default command line for Linux guests (host-specific switches are added by the
/// builder from [`crate::host::HostProfile`]). `reboot=k`: reset through the i8042, which ends
/// the VM cleanly; `panic=-1`: reboot at once on panic instead of hanging.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 rodata=off";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub vcpus: u8,
    pub mem_mib: u64,
    pub boot_protocol: BootProtocol,
    /// Sample the guest's RIP at this interval (see `crate::profile`); `None` = off.
    pub profile_interval: Option<std::time::Duration>,
    /// virtio-blk drives, in the order the guest sees them (vda, vdb, ...).
    pub drives: Vec<DriveConfig>,
    /// Attach a virtio-rng entropy device.
    pub rng: bool,
    /// A virtio-net interface on a host tap device or on passt (user-mode NAT).
    pub net: Option<NetConfig>,
    /// KVM logs the guest's writes so that diff snapshots can be taken.
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// A virtio-vsock device with a Unix-socket host side.
    pub vsock: Option<VsockConfig>,
    /// A virtio-balloon device.
    #[serde(default)]
    pub balloon: Option<BalloonConfig>,
    /// COM1 output beyond this rate is dropped (Firecracker's `PUT /serial` rate_limiter).
    pub serial_limit: Option<SerialLimit>,
}

/// Bytes a second of serial output, with bursts of up to `burst` bytes (0: one second's worth).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialLimit {
    pub bytes_per_sec: u64,
    pub burst: u64,
}

/// The virtio-vsock device: the guest's CID and the Unix socket host programs connect to
/// (guest connections to host port P go to `<uds>_<P>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockConfig {
    pub cid: u64,
    pub uds: PathBuf,
}

/// One virtio-net interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    pub backend: NetBackend,
    pub mac: [u8; 6],
    /// Rate limits of what the guest receives and sends (bursts of one second's worth).
    pub rx_limit: NetLimit,
    pub tx_limit: NetLimit,
}

/// Bytes and frames a second in one direction; 0 = unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetLimit {
    pub bps: u64,
    pub pps: u64,
}

/// Where a virtio-net interface's frames go on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetBackend {
    /// The host's tap interface of this name (opened through /dev/net/tun).
    Tap(String),
    /// A passt child process (no root needed), forwarding these host ports into the guest.
    User { forwards: Vec<PortForward> },
}

/// One virtio-blk drive backed by a raw image file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveConfig {
    /// Name for messages and the guest's GET_ID (/sys/block/vdX/serial); at most 20 bytes reach the guest.
    pub id: String,
    pub path: PathBuf,
    pub read_only: bool,
    /// Rate limits: bytes and requests a second (bursts of one second's worth); 0 = none.
    pub bps: u64,
    pub iops: u64,
    /// Open the image with O_DIRECT (no host page cache; see devices' block/direct.rs).
    pub direct: bool,
}

/// A locally administered unicast MAC derived from `name` (FNV-1a), stable across runs.
pub fn default_mac(name: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_le_bytes();
    [0x02, b[0], b[1], b[2], b[3], b[4]]
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--vcpus must be at least 1")]
    NoVcpus,
    #[error("--vcpus {asked} is more than this host supports ({max})")]
    TooManyVcpus { asked: u32, max: u32 },
    #[error("--memory must be at least 1 MiB")]
    NoMemory,
    #[error("--memory {asked} MiB is more than this host's {host} MiB of RAM")]
    TooMuchMemory { asked: u64, host: u64 },
}

/// Checks the vCPU count against the host's maximum (KVM_CAP_MAX_VCPUS, and 254 for the MP
/// table's 8-bit APIC IDs with one ID kept for the IOAPIC).
pub fn check_vcpus(asked: u32, kvm_max: u32) -> Result<u8, ConfigError> {
    let max = kvm_max.min(254);
    match asked {
        0 => Err(ConfigError::NoVcpus),
        n if n > max => Err(ConfigError::TooManyVcpus { asked: n, max }),
        n => Ok(u8::try_from(n).unwrap_or(u8::MAX)),
    }
}

/// Checks guest memory against the host's physical RAM. hearth does overcommit across VMs
/// (balloon, KSM), but one guest larger than the whole host is a typo, not a plan.
pub fn check_memory(mem_mib: u64, host_mib: u64) -> Result<u64, ConfigError> {
    match mem_mib {
        0 => Err(ConfigError::NoMemory),
        m if m > host_mib => Err(ConfigError::TooMuchMemory {
            asked: m,
            host: host_mib,
        }),
        m => Ok(m),
    }
}

/// The host's physical RAM in MiB.
pub fn host_ram_mib() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (u64::try_from(pages).unwrap_or(0) * u64::try_from(page).unwrap_or(0)) >> 20
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_limits() {
        assert_eq!(check_vcpus(0, 8), Err(ConfigError::NoVcpus));
        assert_eq!(check_vcpus(1, 8), Ok(1));
        assert_eq!(check_vcpus(8, 8), Ok(8));
        assert_eq!(check_vcpus(9, 8), Err(ConfigError::TooManyVcpus { asked: 9, max: 8 }));
        assert_eq!(
            check_vcpus(300, 1024),
            Err(ConfigError::TooManyVcpus { asked: 300, max: 254 })
        );
    }

    #[test]
    fn default_macs_are_stable_local_unicast() {
        let a = default_mac("hnet0");
        assert_eq!(a, default_mac("hnet0"));
        assert_ne!(a, default_mac("hnet1"));
        assert_eq!(a[0], 0x02);
    }

    #[test]
    fn memory_limits() {
        assert_eq!(check_memory(0, 1024), Err(ConfigError::NoMemory));
        assert_eq!(check_memory(128, 1024), Ok(128));
        assert!(check_memory(2048, 1024).unwrap_err().to_string().contains("1024 MiB"));
        assert!(host_ram_mib() > 0);
    }
}

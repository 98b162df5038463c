//! The KVM VM: memory slots, the in-kernel interrupt controllers and PIT, and irqfds.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_config, kvm_pit_state2, kvm_userspace_memory_region, KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VmFd};
use serde::{Deserialize, Serialize};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::layout::{KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR};
use crate::vstate::memory::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open {path} (is KVM available, and may this user open it?)")]
    OpenKvm {
        path: String,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("{path} is not a usable KVM device (KVM API version {version}, need 12)")]
    ApiVersion { path: String, version: i32 },
    #[error("KVM lacks a required capability: {0}")]
    MissingCap(&'static str),
    #[error("cannot create the VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("cannot register guest memory slot {slot} at {addr:#x}")]
    MemorySlot {
        slot: u32,
        addr: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot set up {what}")]
    Setup {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot register irqfd for GSI {gsi}")]
    Irqfd {
        gsi: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
}

fn setup(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Setup { what, source }
}

/// The KVM device: /dev/kvm, or `HEARTH_KVM_DEVICE` when set (tests, unusual setups).
pub fn kvm_device_path() -> String {
    std::env::var("HEARTH_KVM_DEVICE").unwrap_or_else(|_| "/dev/kvm".to_string())
}

/// Opens the KVM device and checks what hearth relies on.
pub fn open_kvm() -> Result<Kvm, VmError> {
    let path = kvm_device_path();
    let cpath = std::ffi::CString::new(path.clone()).map_err(|_| VmError::OpenKvm {
        path: path.clone(),
        source: kvm_ioctls::Error::new(libc::EINVAL),
    })?;
    let kvm = Kvm::new_with_path(&cpath).map_err(|source| VmError::OpenKvm {
        path: path.clone(),
        source,
    })?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(VmError::ApiVersion { path, version });
    }
    use kvm_ioctls::Cap;
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmError::MissingCap(name));
        }
    }
    Ok(kvm)
}

pub struct Vm {
    fd: VmFd,
}

impl Vm {
    /// Creates a VM with `memory` registered, an in-kernel IOAPIC/PIC/LAPIC and PIT.
    pub fn new(kvm: &Kvm, memory: &GuestMemory) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        fd.set_tss_address(usize::try_from(KVM_TSS_ADDR).unwrap_or(usize::MAX))
            .map_err(setup("the TSS address"))?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
            .map_err(setup("the identity map address"))?;
        let vm = Self { fd };
        vm.register_memory(memory)?;
        vm.fd.create_irq_chip().map_err(setup("the in-kernel irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.fd.create_pit2(pit).map_err(setup("the in-kernel PIT"))?;
        Ok(vm)
    }

    fn register_memory(&self, memory: &GuestMemory) -> Result<(), VmError> {
        self.set_memory_slots(memory, 0)
    }

    /// Turns KVM's dirty-page log on for every memory slot (diff snapshots need it). The first
    /// write the guest makes to each page after every [`Vm::take_dirty_pages`] then costs a
    /// fault, so it is off unless asked for.
    pub fn enable_dirty_log(&self, memory: &GuestMemory) -> Result<(), VmError> {
        self.set_memory_slots(memory, KVM_MEM_LOG_DIRTY_PAGES)
    }

    /// The pages the guest wrote since the last call, per memory slot (one bit per 4 KiB page,
    /// in u64 words); reading clears KVM's log.
    pub fn take_dirty_pages(&self, memory: &GuestMemory) -> Result<Vec<Vec<u64>>, VmError> {
        (0u32..)
            .zip(memory.iter())
            .map(|(slot, region)| {
                let size = usize::try_from(region.len()).unwrap_or(usize::MAX);
                self.fd
                    .get_dirty_log(slot, size)
                    .map_err(setup("reading the dirty-page log"))
            })
            .collect()
    }

    fn set_memory_slots(&self, memory: &GuestMemory, flags: u32) -> Result<(), VmError> {
        for (slot, region) in (0u32..).zip(memory.iter()) {
            let addr = region.start_addr().0;
            let mr = kvm_userspace_memory_region {
                slot,
                flags,
                guest_phys_addr: addr,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the region is a live mapping of `memory_size` bytes owned by `memory`,
            // which the caller keeps alive (the Vmm holds it) for as long as the VM exists.
            unsafe { self.fd.set_user_memory_region(mr) }.map_err(|source| VmError::MemorySlot {
                slot,
                addr,
                source,
            })?;
        }
        Ok(())
    }

    /// Makes a write to `evt` raise interrupt line `gsi` (IOAPIC pin / PIC IRQ) without a vCPU exit.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|source| VmError::Irqfd { gsi, source })
    }

    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// The in-kernel devices' state: PIC master/slave, IOAPIC, PIT and the kvmclock.
    pub fn save_state(&self) -> Result<VmState, VmError> {
        let mut chips = Vec::with_capacity(3);
        for chip_id in [KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC] {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            self.fd.get_irqchip(&mut chip).map_err(setup("reading the irqchip"))?;
            chips.push(chip);
        }
        let pit = self.fd.get_pit2().map_err(setup("reading the PIT"))?;
        let mut clock = self.fd.get_clock().map_err(setup("reading the kvmclock"))?;
        // Only the clock value is restored; the flags describe this host's TSC.
        clock.flags = 0;
        Ok(VmState {
            irqchips: chips,
            pit,
            clock,
        })
    }

    /// Loads a saved [`VmState`] into this (freshly created) VM.
    pub fn restore_state(&self, state: &VmState) -> Result<(), VmError> {
        for chip in &state.irqchips {
            self.fd.set_irqchip(chip).map_err(setup("restoring the irqchip"))?;
        }
        self.fd.set_pit2(&state.pit).map_err(setup("restoring the PIT"))?;
        self.fd
            .set_clock(&state.clock)
            .map_err(setup("restoring the kvmclock"))?;
        Ok(())
    }
}

/// What KVM's in-kernel devices hold (see [`Vm::save_state`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmState {
    pub irqchips: Vec<kvm_irqchip>,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

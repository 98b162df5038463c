//! KVM state of the machine: the VM (memory slots, irqchip, PIT, irqfds) and its vCPUs
//! (threads running `KVM_RUN`, exit dispatch, instruction fix-ups, exit statistics), and guest
//! memory filled on demand by a userfaultfd handler (`uffd`, `uffd_backend`).

pub mod exits;
pub mod fixups;
pub mod memory;
pub mod residency;
pub mod uffd;
pub mod uffd_backend;
pub mod vcpu;
pub mod vcpu_state;
pub mod vm;

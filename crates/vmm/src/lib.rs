//! hearth's VMM library: turns a [`config::VmConfig`] into a running KVM microVM.
//!
//! Where things are:
//! - [`builder`]: config → running Linux VM, the only wiring code;
//! - [`machine`]: KVM + memory + VM + buses, the base both Linux and test guests start from;
//! - [`vmm`]: the running VM: vCPU threads and the main event loop;
//! - [`vstate::vcpu`]: the `KVM_RUN` loop, where every exit is dispatched;
//! - [`vstate::fixups`]: instructions the host's emulator could not run (see the `fixup` crate);
//! - [`arch`]: x86_64 layout, boot protocols, CPUID, MSRs, MP table;
//! - [`metrics`]: counters of the running VM as Firecracker JSON lines and Prometheus text;
//! - [`host`]: what kind of KVM host this is (e.g. PVM) and what follows from it.

pub mod arch;
pub mod builder;
pub mod config;
pub mod console_input;
pub mod controller;
pub mod host;
pub mod loader;
pub mod machine;
pub mod metrics;
pub mod persist;
pub mod profile;
pub mod vmm;
pub mod vstate;

pub use builder::{build_linux, restore_linux, BuildError, ConsoleIo};
pub use config::VmConfig;
pub use devices::virtio::BalloonHandle;
pub use machine::{ApStart, Machine, MachineError};
pub use vmm::{Console, RunSummary, VmExit, Vmm};

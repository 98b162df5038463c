//! Config → running Linux microVM: the one place where the machine is wired together.
//!
//! Order: check the config against the host, create KVM/memory/VM, load kernel + initrd +
//! command line, write boot information (zero page or PVH start_info) and the MP table, put
//! the legacy devices (COM1, i8042) on the port bus with irqfds, then start the vCPUs.

use std::io::Write;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use devices::legacy::{i8042, serial, SerialConsole, I8042};
use devices::EventFdTrigger;
use vm_memory::GuestMemoryMmap;

use crate::arch::{boot, mptable};
use crate::config::{check_memory, check_vcpus, host_ram_mib, ConfigError, VmConfig};
use crate::loader::{self, KernelEntry, LoadError};
use crate::machine::{ApStart, Machine, MachineError};
use crate::vmm::{Console, Vmm};
use crate::vstate::vm::open_kvm;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    BootInfo(#[from] boot::BootInfoError),
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
}

/// The host's terminal as seen by the guest's serial console.
pub struct ConsoleIo {
    pub output: Box<dyn Write + Send>,
    pub input: Option<RawFd>,
}

/// The full kernel command line: the user's (or hearth's default) plus the switches the host
/// needs (e.g. on PVM hosts), unless the user already set them.
pub fn effective_cmdline(user: &str, host_switches: &[&str]) -> String {
    let mut cmdline = user.trim().to_string();
    // Anything after " -- " goes to init: host switches must come before it.
    let (kernel_part, init_part) = match cmdline.find(" -- ") {
        Some(i) => (cmdline[..i].to_string(), cmdline[i..].to_string()),
        None if cmdline.starts_with("-- ") => (String::new(), format!(" {cmdline}")),
        None => (cmdline.clone(), String::new()),
    };
    let mut kernel_part = kernel_part;
    for sw in host_switches {
        let key = sw.split('=').next().unwrap_or(sw);
        let present = kernel_part
            .split_whitespace()
            .any(|w| w == *sw || w.starts_with(&format!("{key}=")) || w == key);
        if !present {
            if !kernel_part.is_empty() {
                kernel_part.push(' ');
            }
            kernel_part.push_str(sw);
        }
    }
    cmdline = kernel_part + &init_part;
    cmdline
}

/// Builds and starts a Linux microVM described by `config`.
pub fn build_linux(config: &VmConfig, io: ConsoleIo) -> Result<Vmm, BuildError> {
    let kvm = open_kvm().map_err(MachineError::from)?;
    let vcpus = check_vcpus(u32::from(config.vcpus), Machine::max_vcpus(&kvm))?;
    drop(kvm);
    let mem_mib = check_memory(config.mem_mib, host_ram_mib())?;
    let mem_size = mem_mib << 20;
    let mut machine = Machine::new(vcpus, mem_size)?;
    machine.profile_interval = config.profile_interval;

    let kernel = loader::load_kernel(&machine.memory, &config.kernel, config.boot_protocol)?;
    let initrd = match &config.initrd {
        Some(p) => Some(loader::load_initrd(&machine.memory, mem_size, p, &kernel)?),
        None => None,
    };
    let cmdline = effective_cmdline(&config.cmdline, machine.host.guest_cmdline);
    log::info!("kernel command line: {cmdline}");
    let cmdline_len = loader::load_cmdline(&machine.memory, &cmdline)?;
    let boot_info = write_boot_info(&machine.memory, mem_size, &kernel, cmdline_len, initrd)?;
    mptable::write(&machine.memory, vcpus)?;

    let serial = Arc::new(Mutex::new(SerialConsole::new(
        EventFdTrigger::new(machine.irq_evt(serial::COM1_IRQ)?),
        io.output,
    )));
    machine.insert_pio(serial.clone(), serial::COM1_PORT, serial::COM1_LEN)?;
    let i8042 = Arc::new(Mutex::new(I8042::new(machine.reset_trigger()?)));
    machine.insert_pio(i8042, i8042::I8042_PORT, i8042::I8042_LEN)?;

    let entry = kernel.entry.mode(boot_info);
    let console = Console {
        serial,
        input: io.input,
    };
    Ok(machine.start(entry, ApStart::WaitForSipi, Some(console))?)
}

fn write_boot_info(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &loader::LoadedKernel,
    cmdline_len: usize,
    initrd: Option<boot::InitrdRange>,
) -> Result<u64, boot::BootInfoError> {
    match kernel.entry {
        KernelEntry::Pvh(_) => boot::write_pvh_start_info(mem, mem_size, initrd),
        KernelEntry::Linux64(_) => {
            boot::write_zero_page(mem, mem_size, kernel.setup_header.as_deref(), cmdline_len, initrd)
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    #[test]
    fn host_switches_are_added_before_init_args_once() {
        let sw = ["noxsave", "clearcpuid=popcnt,smap"];
        assert_eq!(
            effective_cmdline("console=ttyS0", &sw),
            "console=ttyS0 noxsave clearcpuid=popcnt,smap"
        );
        assert_eq!(
            effective_cmdline("console=ttyS0 -- /bin/sh -c 'echo hi'", &sw),
            "console=ttyS0 noxsave clearcpuid=popcnt,smap -- /bin/sh -c 'echo hi'"
        );
        assert_eq!(
            effective_cmdline("noxsave clearcpuid=popcnt", &sw),
            "noxsave clearcpuid=popcnt"
        );
        assert_eq!(effective_cmdline("a", &[]), "a");
        assert_eq!(effective_cmdline("-- x", &["noxsave"]), "noxsave -- x");
    }
}

//! Interrupt triggers: how a device tells the guest "look at me".
//!
//! In a VM the trigger is an eventfd registered with KVM as an irqfd, so raising an interrupt
//! is one `write(2)` and never involves the vCPU thread.

use std::io;
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// Something that can raise a guest interrupt line.
pub trait Interrupt: Send + Sync {
    fn raise(&self) -> io::Result<()>;
}

/// An eventfd-backed trigger (an irqfd in a running VM).
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    pub fn new(evt: EventFd) -> Self {
        Self(evt)
    }
    pub fn eventfd(&self) -> &EventFd {
        &self.0
    }
}

impl Interrupt for EventFdTrigger {
    fn raise(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

impl Trigger for EventFdTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.raise()
    }
}

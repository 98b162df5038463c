//! The i8042 keyboard controller, present only so a guest can reset the machine
//! (Linux `reboot=k` writes command 0xFE to port 0x64). The reset goes to a `Trigger` that the
//! VMM turns into a clean shutdown.

use bus::BusDevice;
use vm_superio::{I8042Device, Trigger};

/// Ports 0x60 (data) .. 0x64 (command/status).
pub const I8042_PORT: u64 = 0x60;
pub const I8042_LEN: u64 = 5;

/// The controller; `T` is what a reset request triggers (the VMM's shutdown path).
pub struct I8042<T: Trigger> {
    inner: I8042Device<T>,
}

impl<T: Trigger> I8042<T> {
    pub fn new(reset: T) -> Self {
        Self {
            inner: I8042Device::new(reset),
        }
    }
}

impl<T: Trigger + Send> BusDevice for I8042<T> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data.len()) {
            (Ok(off), 1) => data[0] = self.inner.read(off),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), [value]) = (u8::try_from(offset), data) {
            if let Err(e) = self.inner.write(off, *value) {
                log::error!("i8042: cannot signal the guest's reset request: {e:?}");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;
    use crate::EventFdTrigger;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[test]
    fn reset_command_signals_eventfd() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = I8042::new(EventFdTrigger::new(evt.try_clone().unwrap()));
        dev.write(4, &[0x01]);
        assert!(evt.read().is_err(), "no reset for other commands");
        dev.write(4, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
        let mut status = [0xaa];
        dev.read(4, &mut status);
        assert_eq!(status[0], 0, "input buffer never full, so the guest's kb_wait() passes");
    }
}

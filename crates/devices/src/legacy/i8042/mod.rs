//! The i8042 keyboard controller with an AT keyboard on its first port and no auxiliary
//! (mouse) port, written for hearth: the status register, the controller command byte, the
//! controller commands the Linux i8042 driver uses (drivers/input/serio/i8042.c) and IRQ 1.
//!
//! Two things reach the VMM from here: the guest's reset request (command 0xFE, or an output
//! port write with the reset line low, as Linux `reboot=k` does) goes to the `reset` interrupt,
//! which the VMM turns into a clean exit; and [`I8042::ctrl_alt_del`] types Ctrl+Alt+Del for
//! Firecracker's `SendCtrlAltDel`. Everything a guest writes to ports 0x60-0x64 is bounded:
//! one output byte, a few controller replies and the keyboard's 16-byte buffer.
//!
//! Not modelled: the auxiliary port (commands 0xA7-0xA9, 0xD3, 0xD4 get no reply; Linux is
//! told `i8042.noaux`), the multiplexer, internal RAM beyond the command byte, parity and
//! timeout errors. Snapshots do not carry the controller: a restored VM gets one at power-on,
//! which is the state Linux leaves it in after its probe (command byte 0x65, scanning on, set 2
//! translated); bytes in flight, the LEDs and the typematic rate are lost.

pub mod keyboard;
pub mod metrics;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

use bus::BusDevice;

use crate::interrupt::Interrupt;
pub use keyboard::{AtKeyboard, Key};
pub use metrics::I8042Metrics;

/// Ports 0x60 (data) .. 0x64 (command/status).
pub const I8042_PORT: u64 = 0x60;
pub const I8042_LEN: u64 = 5;
/// ISA IRQ line of the keyboard port.
pub const I8042_KBD_IRQ: u32 = 1;

const DATA: u64 = 0;
const COMMAND: u64 = 4;

/// Status register bits.
pub const STR_OBF: u8 = 0x01;
pub const STR_SYS: u8 = 0x04;
pub const STR_CMDDAT: u8 = 0x08;
/// Set while the keyboard is not inhibited by the key lock.
pub const STR_KEYLOCK: u8 = 0x10;

/// Controller command byte bits.
pub const CTR_KBDINT: u8 = 0x01;
pub const CTR_SYS: u8 = 0x04;
pub const CTR_KBDDIS: u8 = 0x10;
pub const CTR_AUXDIS: u8 = 0x20;
pub const CTR_XLATE: u8 = 0x40;

/// As firmware leaves it: translation on, keyboard interrupt on, POST passed, no aux port.
const CTR_POWER_ON: u8 = CTR_XLATE | CTR_AUXDIS | CTR_SYS | CTR_KBDINT;
/// Output port: reset line (active low) and A20 gate high.
const OUTPUT_PORT_POWER_ON: u8 = 0x03;
/// Controller replies wait here behind the output buffer; no command queues more than one.
const CTL_QUEUE: usize = 4;

/// The reply to the controller self-test (0xAA) and the interface test (0xAB).
const SELF_TEST_OK: u8 = 0x55;
const INTERFACE_OK: u8 = 0x00;

/// The controller and its keyboard.
pub struct I8042 {
    ctr: u8,
    output_port: u8,
    /// The byte the guest reads next from port 0x60 (status OBF while `Some`).
    out: Option<u8>,
    /// The last byte read, returned again by a read of an empty buffer.
    last_out: u8,
    /// Controller replies behind `out`, ahead of keyboard bytes.
    replies: VecDeque<u8>,
    /// A controller command waiting for its parameter byte on port 0x60.
    pending: Option<u8>,
    /// The last write went to the command port (status bit 3).
    last_was_command: bool,
    kbd: AtKeyboard,
    irq: Box<dyn Interrupt>,
    reset: Box<dyn Interrupt>,
    metrics: Arc<I8042Metrics>,
}

impl I8042 {
    /// `irq` raises IRQ 1; `reset` is the guest's request to reset the machine.
    pub fn new(irq: Box<dyn Interrupt>, reset: Box<dyn Interrupt>) -> Self {
        Self {
            ctr: CTR_POWER_ON,
            output_port: OUTPUT_PORT_POWER_ON,
            out: None,
            last_out: 0,
            replies: VecDeque::with_capacity(CTL_QUEUE),
            pending: None,
            last_was_command: false,
            kbd: AtKeyboard::default(),
            irq,
            reset,
            metrics: Arc::new(I8042Metrics::default()),
        }
    }

    pub fn metrics(&self) -> Arc<I8042Metrics> {
        self.metrics.clone()
    }

    pub fn keyboard(&self) -> &AtKeyboard {
        &self.kbd
    }

    pub fn command_byte(&self) -> u8 {
        self.ctr
    }

    fn translating(&self) -> bool {
        self.ctr & CTR_XLATE != 0
    }

    /// Presses Ctrl, Alt and Delete and lets them go again. Returns false if the keyboard did
    /// not take the keys (the guest disabled scanning, or its buffer is full).
    pub fn ctrl_alt_del(&mut self) -> bool {
        let keys = [Key::LeftCtrl, Key::LeftAlt, Key::Delete];
        let xlate = self.translating();
        let mut ok = keys.iter().all(|&k| self.kbd.key(k, true, xlate));
        // Release what was pressed even if a press did not fit, in reverse order.
        for &k in keys.iter().rev() {
            ok &= self.kbd.key(k, false, xlate);
        }
        if !ok {
            self.metrics.missed_write_count.inc();
        }
        self.refill();
        ok
    }

    fn status(&self) -> u8 {
        let mut s = STR_KEYLOCK;
        if self.out.is_some() {
            s |= STR_OBF;
        }
        if self.ctr & CTR_SYS != 0 {
            s |= STR_SYS;
        }
        if self.last_was_command {
            s |= STR_CMDDAT;
        }
        s
    }

    /// Moves the next byte into an empty output buffer and raises IRQ 1 for it if the command
    /// byte enables the keyboard interrupt.
    fn refill(&mut self) {
        if self.out.is_some() {
            return;
        }
        let next = match self.replies.pop_front() {
            Some(b) => Some(b),
            None if self.ctr & CTR_KBDDIS == 0 => self.kbd.pop(),
            None => None,
        };
        if let Some(b) = next {
            self.out = Some(b);
            if self.ctr & CTR_KBDINT != 0 {
                if let Err(e) = self.irq.raise() {
                    ::virtio::guest_warn(format_args!("i8042: cannot raise IRQ 1: {e}"));
                }
            }
        }
    }

    fn reply(&mut self, byte: u8) {
        if self.replies.len() < CTL_QUEUE {
            self.replies.push_back(byte);
        } else {
            self.metrics.missed_write_count.inc();
        }
    }

    fn request_reset(&mut self) {
        self.metrics.reset_count.inc();
        if let Err(e) = self.reset.raise() {
            log::error!("i8042: cannot signal the guest's reset request: {e}");
        }
    }

    fn read_data(&mut self) -> u8 {
        let b = match self.out.take() {
            Some(b) => {
                self.metrics.read_count.inc();
                self.last_out = b;
                b
            }
            None => {
                self.metrics.missed_read_count.inc();
                self.last_out
            }
        };
        self.refill();
        b
    }

    fn write_command(&mut self, cmd: u8) {
        self.pending = None;
        match cmd {
            0x20 => self.reply(self.ctr),
            // The rest of the controller's internal RAM is not modelled: it reads as zero.
            0x21..=0x3f | 0xc0 | 0xe0 => self.reply(0),
            0x60..=0x7f | 0xd1..=0xd4 => self.pending = Some(cmd),
            0xaa => self.reply(SELF_TEST_OK),
            0xab => self.reply(INTERFACE_OK),
            0xad => self.ctr |= CTR_KBDDIS,
            0xae => self.ctr &= !CTR_KBDDIS,
            0xd0 => self.reply(self.output_port),
            // Pulse output lines: a 0 in bit 0 pulses the reset line.
            0xf0..=0xff if cmd & 1 == 0 => self.request_reset(),
            0xf0..=0xff => {}
            // No auxiliary port (0xa7-0xa9) and nothing else answers.
            _ => self.metrics.missed_write_count.inc(),
        }
    }

    fn write_data(&mut self, byte: u8) {
        match self.pending.take() {
            Some(0x60) => self.ctr = byte,
            Some(0x61..=0x7f) => {}
            Some(0xd1) => {
                self.output_port = byte;
                if byte & 1 == 0 {
                    self.request_reset();
                }
            }
            // "Write keyboard output buffer": the byte comes back as if the keyboard sent it.
            Some(0xd2) => self.reply(byte),
            // Bytes for the auxiliary port, which is not there.
            Some(_) => self.metrics.missed_write_count.inc(),
            None => {
                let xlate = self.translating();
                self.kbd.write(byte, xlate);
            }
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data) {
            (DATA, [b]) => *b = self.read_data(),
            (COMMAND, [b]) => *b = self.status(),
            (_, data) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (DATA, [b]) => {
                self.last_was_command = false;
                self.write_data(*b);
            }
            (COMMAND, [b]) => {
                self.last_was_command = true;
                self.write_command(*b);
            }
            _ => {
                self.metrics.missed_write_count.inc();
                return;
            }
        }
        self.metrics.write_count.inc();
        self.refill();
    }
}

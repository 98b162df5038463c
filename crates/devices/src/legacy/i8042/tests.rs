//! The controller driven byte by byte as the Linux i8042 and atkbd drivers drive it at probe
//! (drivers/input/serio/i8042.c, drivers/input/keyboard/atkbd.c), then keys, then junk.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bus::BusDevice;

use super::*;

#[derive(Clone, Default)]
struct Count(Arc<AtomicU32>);
impl Count {
    fn get(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }
}
impl Interrupt for Count {
    fn raise(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

struct Kbc {
    dev: I8042,
    irq: Count,
    reset: Count,
}

impl Kbc {
    fn new() -> Self {
        let (irq, reset) = (Count::default(), Count::default());
        Self {
            dev: I8042::new(Box::new(irq.clone()), Box::new(reset.clone())),
            irq,
            reset,
        }
    }
    fn status(&mut self) -> u8 {
        let mut b = [0u8];
        self.dev.read(4, &mut b);
        b[0]
    }
    fn command(&mut self, cmd: u8) {
        assert_eq!(
            self.status() & 0x02,
            0,
            "input buffer empty before a write (i8042_wait_write)"
        );
        self.dev.write(4, &[cmd]);
    }
    fn data(&mut self, b: u8) {
        assert_eq!(self.status() & 0x02, 0);
        self.dev.write(0, &[b]);
    }
    /// One byte if the output buffer is full (i8042_wait_read + read).
    fn read(&mut self) -> Option<u8> {
        if self.status() & STR_OBF == 0 {
            return None;
        }
        let mut b = [0u8];
        self.dev.read(0, &mut b);
        Some(b[0])
    }
    /// Everything the controller has to say now.
    fn drain(&mut self) -> Vec<u8> {
        std::iter::from_fn(|| self.read()).collect()
    }
    /// i8042_command: a command, its parameters, its replies.
    fn ctl(&mut self, cmd: u8, params: &[u8], replies: usize) -> Vec<u8> {
        self.command(cmd);
        for &p in params {
            self.data(p);
        }
        (0..replies).map(|_| self.read().expect("a controller reply")).collect()
    }
    /// Bytes delivered one interrupt at a time, as i8042_interrupt reads them.
    fn by_interrupt(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let before = self.irq.get();
            match self.read() {
                Some(b) => out.push(b),
                None => return out,
            }
            if self.status() & STR_OBF != 0 {
                assert_eq!(self.irq.get(), before + 1, "IRQ 1 for each byte after {out:x?}");
            }
        }
    }
}

/// What Linux does from i8042_platform_init to atkbd_connect, returning the controller with
/// the keyboard enabled and IRQ 1 on.
fn linux_probe() -> Kbc {
    let mut k = Kbc::new();
    // i8042_controller_check → i8042_flush: nothing pending at power-on.
    assert_eq!(k.drain(), Vec::<u8>::new());
    // A20 on through the output port, then the null command for SMM firmware: no reset.
    assert!(k.ctl(0xd1, &[0xdf], 0).is_empty());
    k.ctl(0xff, &[], 0);
    assert_eq!(k.ctl(0xd0, &[], 1), [0xdf]);
    assert_eq!(k.ctl(0xaa, &[], 1), [0x55], "controller self-test");
    assert_eq!(k.ctl(0xab, &[], 1), [0x00], "keyboard interface test");
    // i8042_controller_init: two equal CTR reads, no key lock, keyboard off, CTR back.
    let ctr = k.ctl(0x20, &[], 1)[0];
    assert_eq!(k.ctl(0x20, &[], 1)[0], ctr);
    assert_eq!(ctr & CTR_XLATE, CTR_XLATE, "translating, as firmware leaves it");
    assert_ne!(k.status() & STR_KEYLOCK, 0, "no 'Keylock active' warning");
    assert_ne!(k.status() & STR_SYS, 0);
    let off = (ctr | CTR_KBDDIS) & !CTR_KBDINT;
    k.ctl(0x60, &[off], 0);
    assert_eq!(k.ctl(0x20, &[], 1), [off]);
    // i8042_enable_kbd_port.
    k.ctl(0x60, &[(off & !CTR_KBDDIS) | CTR_KBDINT], 0);
    assert_eq!(k.reset.get(), 0);
    // atkbd_probe: GETID (translated ID), deactivate; atkbd_reset_state: LEDs, repeat rate;
    // atkbd_activate.
    let irqs = k.irq.get();
    k.data(0xf2);
    assert_eq!(k.irq.get(), irqs + 1);
    assert_eq!(k.by_interrupt(), [0xfa, 0xab, 0x41]);
    k.data(0xf5);
    assert_eq!(k.by_interrupt(), [0xfa]);
    assert!(!k.dev.keyboard().scanning());
    k.data(0xed);
    assert_eq!(k.by_interrupt(), [0xfa]);
    k.data(0x00);
    assert_eq!(k.by_interrupt(), [0xfa]);
    k.data(0xf3);
    assert_eq!(k.by_interrupt(), [0xfa]);
    k.data(0x00);
    assert_eq!(k.by_interrupt(), [0xfa]);
    assert_eq!(k.dev.keyboard().typematic(), 0);
    k.data(0xf4);
    assert_eq!(k.by_interrupt(), [0xfa]);
    assert!(k.dev.keyboard().scanning());
    k
}

#[test]
fn linux_probe_then_ctrl_alt_del_in_set_1() {
    let mut k = linux_probe();
    let irqs = k.irq.get();
    assert!(k.dev.ctrl_alt_del());
    assert_eq!(k.irq.get(), irqs + 1, "the first byte raises IRQ 1");
    let codes = k.by_interrupt();
    assert_eq!(codes, [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d]);
    assert_eq!(k.irq.get(), irqs + 8);
    let m = k.dev.metrics();
    assert_eq!(m.reset_count.get(), 0);
    assert!(m.read_count.get() > 8 && m.write_count.get() > 10);
    // Linux reboot=k: 0xFE on the command port.
    k.command(0xfe);
    assert_eq!(k.reset.get(), 1);
    assert_eq!(m.reset_count.get(), 1);
}

#[test]
fn untranslated_keyboard_speaks_the_set_the_guest_chose() {
    let mut k = Kbc::new();
    k.ctl(0x60, &[CTR_KBDINT | CTR_SYS], 0);
    k.data(0xf2);
    assert_eq!(k.by_interrupt(), [0xfa, 0xab, 0x83]);
    k.data(0xf0);
    assert_eq!(k.by_interrupt(), [0xfa]);
    k.data(0x00);
    assert_eq!(k.by_interrupt(), [0xfa, 0x02], "current scancode set");
    assert!(k.dev.ctrl_alt_del());
    let set2 = [0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14];
    assert_eq!(k.by_interrupt(), set2);
    k.data(0xf0);
    k.data(0x03);
    assert_eq!(
        k.by_interrupt(),
        [0xfa, 0xfa],
        "a guest need not wait for the first ACK"
    );
    assert!(k.dev.ctrl_alt_del());
    assert_eq!(k.by_interrupt(), [0x11, 0x19, 0x64, 0xf0, 0x64, 0xf0, 0x19, 0xf0, 0x11]);
    k.data(0xf0);
    k.data(0x01);
    k.drain();
    assert!(k.dev.ctrl_alt_del());
    assert_eq!(k.drain(), [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d]);
    // Reset: ACK, BAT passed, back to set 2.
    k.data(0xff);
    assert_eq!(k.drain(), [0xfa, 0xaa]);
    assert_eq!(k.dev.keyboard().scancode_set(), 2);
    k.data(0xee);
    assert_eq!(k.drain(), [0xee], "echo");
    k.data(0xfe);
    assert_eq!(k.drain(), [0xee], "resend repeats the last byte");
    k.data(0xab);
    assert_eq!(k.drain(), [0xfe], "unknown keyboard command: resend");
    k.data(0xf0);
    k.data(0x07);
    assert_eq!(k.drain(), [0xfa, 0xfe], "no scancode set 7");
    // A command where an argument was expected runs as a command.
    k.data(0xed);
    k.data(0xf2);
    assert_eq!(k.drain(), [0xfa, 0xfa, 0xab, 0x83]);
}

#[test]
fn disabled_port_holds_keys_and_polling_needs_no_interrupt() {
    let mut k = Kbc::new();
    // Interrupt off: bytes wait in the buffer, OBF tells the poller.
    k.ctl(0x60, &[CTR_XLATE | CTR_SYS], 0);
    let irqs = k.irq.get();
    assert!(k.dev.ctrl_alt_del());
    assert_eq!(k.irq.get(), irqs);
    assert_eq!(k.drain().len(), 8);
    // Keyboard port disabled (0xAD): the keyboard keeps its bytes until 0xAE.
    k.command(0xad);
    assert_ne!(k.dev.command_byte() & CTR_KBDDIS, 0);
    assert!(k.dev.ctrl_alt_del());
    assert_eq!(k.status() & STR_OBF, 0);
    // Controller replies still come through.
    assert_eq!(k.ctl(0x20, &[], 1)[0] & CTR_KBDDIS, CTR_KBDDIS);
    k.command(0xae);
    assert_eq!(k.drain().len(), 8);
    // Scanning off (F5): keys are refused, not queued.
    k.data(0xf5);
    k.drain();
    assert!(!k.dev.ctrl_alt_del());
    assert_eq!(k.drain(), Vec::<u8>::new());
    assert_eq!(k.dev.metrics().missed_write_count.get(), 1);
    // 0xD2: a byte written back as if the keyboard sent it.
    k.ctl(0xd2, &[0x42], 0);
    assert_eq!(k.drain(), [0x42]);
    // An empty buffer reads the last byte again and is counted.
    let mut b = [0u8];
    k.dev.read(0, &mut b);
    assert_eq!(b[0], 0x42);
    assert_eq!(k.dev.metrics().missed_read_count.get(), 1);
}

#[test]
fn reset_lines_and_aux_commands() {
    let mut k = Kbc::new();
    for cmd in [0xff, 0xfd, 0xf1, 0xa7, 0xa8, 0xa9] {
        k.command(cmd);
    }
    assert_eq!(k.drain(), Vec::<u8>::new(), "no aux port: no answers");
    // Bytes for the aux port are swallowed, not sent to the keyboard.
    k.ctl(0xd4, &[0xf2], 0);
    k.ctl(0xd3, &[0x5a], 0);
    assert_eq!(k.drain(), Vec::<u8>::new());
    assert_eq!(k.reset.get(), 0);
    k.command(0xf0);
    assert_eq!(k.reset.get(), 1, "any pulse with bit 0 low resets");
    k.ctl(0xd1, &[0xde], 0);
    assert_eq!(k.reset.get(), 2, "output port with the reset line low");
    // A command cancels a pending parameter: the next data byte goes to the keyboard.
    k.command(0x60);
    k.command(0xab);
    assert_eq!(k.drain(), [0x00]);
    k.data(0xf2);
    assert_eq!(k.drain(), [0xfa, 0xab, 0x41]);
}

#[test]
fn a_guest_writing_anything_anywhere_stays_bounded() {
    let mut k = Kbc::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..200_000 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let [a, b, c, _] = x.to_le_bytes();
        let off = u64::from(a % 6);
        match b % 4 {
            0 => k.dev.write(off, &[c]),
            1 => {
                let mut d = [0u8];
                k.dev.read(off, &mut d);
            }
            2 => {
                let _ = k.dev.ctrl_alt_del();
            }
            _ => {
                let mut wide = [0u8; 2];
                k.dev.read(off, &mut wide);
                assert_eq!(wide, [0xff, 0xff]);
                k.dev.write(off, &[c, c]);
            }
        }
        assert!(k.dev.replies.len() <= CTL_QUEUE);
        assert!(k.dev.keyboard().pending() <= keyboard::KBD_BUFFER);
    }
    // Still a working controller afterwards.
    k.command(0x60);
    k.data(CTR_XLATE | CTR_KBDINT);
    k.drain();
    k.data(0xff);
    assert_eq!(k.drain(), [0xfa, 0xaa]);
}

//! The AT keyboard behind the i8042's first port: the PS/2 keyboard commands the Linux atkbd
//! driver sends (IBM PS/2 Technical Reference, "Keyboard and auxiliary device controller";
//! Linux drivers/input/keyboard/atkbd.c, drivers/input/serio/libps2.c) and the scancodes of the
//! few keys hearth presses on the guest's behalf (Ctrl+Alt+Del).
//!
//! The keyboard owns only its own output queue (bounded like a real keyboard's 16-byte buffer);
//! the controller ([`super::I8042`]) moves bytes from it to its output buffer.

use std::collections::VecDeque;

/// A real keyboard buffers 16 bytes; anything beyond is dropped (and counted by the controller).
pub const KBD_BUFFER: usize = 16;

/// Replies.
pub const ACK: u8 = 0xfa;
pub const RESEND: u8 = 0xfe;
pub const BAT_OK: u8 = 0xaa;
pub const ECHO: u8 = 0xee;

/// Commands (the byte the guest writes to port 0x60 with no controller command pending).
const CMD_SET_LEDS: u8 = 0xed;
const CMD_ECHO: u8 = 0xee;
const CMD_SCANSET: u8 = 0xf0;
const CMD_GET_ID: u8 = 0xf2;
const CMD_SET_REP: u8 = 0xf3;
const CMD_ENABLE: u8 = 0xf4;
const CMD_RESET_DIS: u8 = 0xf5;
const CMD_RESET_DEF: u8 = 0xf6;
const CMD_RESEND: u8 = 0xfe;
const CMD_RESET_BAT: u8 = 0xff;

/// The keys hearth can press.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    LeftCtrl,
    LeftAlt,
    /// The extended (grey) Delete key.
    Delete,
}

impl Key {
    /// Make code in scancode set 1 (what a translating controller hands the guest), set 2 and
    /// set 3, and whether the key is an extended one (0xE0 prefix, sets 1 and 2).
    fn codes(self) -> ([u8; 3], bool) {
        match self {
            Key::LeftCtrl => ([0x1d, 0x14, 0x11], false),
            Key::LeftAlt => ([0x38, 0x11, 0x19], false),
            Key::Delete => ([0x53, 0x71, 0x64], true),
        }
    }

    /// The bytes for pressing (`down`) or releasing this key in scancode set `set` (1..=3).
    pub fn scancode(self, set: u8, down: bool) -> Vec<u8> {
        let (codes, extended) = self.codes();
        let mut out = Vec::with_capacity(3);
        match set {
            1 => {
                if extended {
                    out.push(0xe0);
                }
                out.push(if down { codes[0] } else { codes[0] | 0x80 });
            }
            3 => {
                if !down {
                    out.push(0xf0);
                }
                out.push(codes[2]);
            }
            _ => {
                if extended {
                    out.push(0xe0);
                }
                if !down {
                    out.push(0xf0);
                }
                out.push(codes[1]);
            }
        }
        out
    }
}

/// The keyboard's state: what it is configured to do and what it has to say.
#[derive(Debug)]
pub struct AtKeyboard {
    queue: VecDeque<u8>,
    /// Key events are reported (F4 enables, F5 disables).
    scanning: bool,
    /// Scancode set 1, 2 or 3 (2 after reset).
    set: u8,
    /// A command waiting for its argument byte (ED, F3, F0).
    expect: Option<u8>,
    leds: u8,
    typematic: u8,
    /// Last byte sent, for the resend command.
    last: u8,
}

impl Default for AtKeyboard {
    fn default() -> Self {
        Self {
            queue: VecDeque::with_capacity(KBD_BUFFER),
            scanning: true,
            set: 2,
            expect: None,
            leds: 0,
            typematic: 0x2b,
            last: 0,
        }
    }
}

impl AtKeyboard {
    /// The next byte for the controller, if any.
    pub fn pop(&mut self) -> Option<u8> {
        let b = self.queue.pop_front()?;
        self.last = b;
        Some(b)
    }

    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    pub fn scanning(&self) -> bool {
        self.scanning
    }

    pub fn scancode_set(&self) -> u8 {
        self.set
    }

    pub fn leds(&self) -> u8 {
        self.leds
    }

    pub fn typematic(&self) -> u8 {
        self.typematic
    }

    fn reply(&mut self, bytes: &[u8]) {
        // A command's reply replaces whatever was queued (a keyboard flushes its buffer when it
        // receives a command), so it always fits.
        for &b in bytes {
            if self.queue.len() < KBD_BUFFER {
                self.queue.push_back(b);
            }
        }
    }

    fn defaults(&mut self) {
        self.set = 2;
        self.leds = 0;
        self.typematic = 0x2b;
        self.expect = None;
    }

    /// A byte from the guest. `translated`: the controller translates set 2 to set 1, which
    /// also changes the ID's second byte (0x83 → 0x41) as on real hardware.
    pub fn write(&mut self, byte: u8, translated: bool) {
        if let Some(cmd) = self.expect.take() {
            // Any command byte cancels a pending argument and runs as a command.
            if byte < CMD_SET_LEDS {
                self.argument(cmd, byte, translated);
                return;
            }
        }
        self.queue.clear();
        match byte {
            CMD_SET_LEDS | CMD_SET_REP | CMD_SCANSET => {
                self.expect = Some(byte);
                self.reply(&[ACK]);
            }
            CMD_ECHO => self.reply(&[ECHO]),
            CMD_GET_ID => self.reply(&[ACK, 0xab, if translated { 0x41 } else { 0x83 }]),
            CMD_ENABLE => {
                self.scanning = true;
                self.reply(&[ACK]);
            }
            CMD_RESET_DIS => {
                self.defaults();
                self.scanning = false;
                self.reply(&[ACK]);
            }
            CMD_RESET_DEF => {
                self.defaults();
                self.scanning = true;
                self.reply(&[ACK]);
            }
            CMD_RESEND => {
                let last = self.last;
                self.reply(&[last]);
            }
            CMD_RESET_BAT => {
                self.defaults();
                self.scanning = true;
                self.reply(&[ACK, BAT_OK]);
            }
            _ => self.reply(&[RESEND]),
        }
    }

    fn argument(&mut self, cmd: u8, arg: u8, translated: bool) {
        match cmd {
            CMD_SET_LEDS => {
                self.leds = arg & 0x07;
                self.reply(&[ACK]);
            }
            CMD_SET_REP => {
                self.typematic = arg & 0x7f;
                self.reply(&[ACK]);
            }
            _ => match arg {
                0 => {
                    // Reported through the translation like any other byte.
                    let id = match (self.set, translated) {
                        (1, true) => 0x43,
                        (2, true) => 0x41,
                        (3, true) => 0x3f,
                        (set, false) => set,
                        _ => 0x41,
                    };
                    self.reply(&[ACK, id]);
                }
                1..=3 => {
                    self.set = arg;
                    self.reply(&[ACK]);
                }
                _ => self.reply(&[RESEND]),
            },
        }
    }

    /// Queues the scancode of `key` going down or up, in the set the guest sees (set 1 when the
    /// controller translates). Returns false, dropping the whole code, when scanning is off or
    /// the buffer has no room for it.
    pub fn key(&mut self, key: Key, down: bool, translated: bool) -> bool {
        if !self.scanning {
            return false;
        }
        // Only set 2 translates into meaningful set-1 codes; a guest that selects another set
        // with translation on gets set 1 as well (real controllers would garble it).
        let set = if translated { 1 } else { self.set };
        let code = key.scancode(set, down);
        if self.queue.len() + code.len() > KBD_BUFFER {
            return false;
        }
        self.queue.extend(code);
        true
    }
}

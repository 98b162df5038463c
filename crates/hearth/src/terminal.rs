//! Puts the host terminal in raw mode while a guest console is attached, and restores it.

use std::io::IsTerminal;

use vmm_sys_util::terminal::Terminal;

pub struct RawTerminal {
    active: bool,
}

impl RawTerminal {
    /// Switches stdin to raw mode if it is a terminal.
    pub fn enter() -> Self {
        let stdin = std::io::stdin();
        let active = stdin.is_terminal() && stdin.lock().set_raw_mode().is_ok();
        Self { active }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if self.active {
            let _ = std::io::stdin().lock().set_canon_mode();
        }
    }
}

//! Host keyboard input on its way to the guest's serial port: the escape sequence that leaves
//! the VM (Ctrl-A x, as QEMU's `-nographic`), and bytes waiting for room in the UART's FIFO.

/// Ctrl-A starts an escape; Ctrl-A Ctrl-A sends one Ctrl-A to the guest.
pub const ESCAPE: u8 = 0x01;

#[derive(Default)]
pub struct ConsoleInput {
    escape: bool,
    pending: Vec<u8>,
}

/// What the typed bytes asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    /// Bytes queued for the guest (see [`ConsoleInput::pending`]).
    ForGuest,
    /// The user asked to leave the VM.
    Quit,
}

impl ConsoleInput {
    /// Interprets bytes typed on the host.
    pub fn push(&mut self, bytes: &[u8]) -> Typed {
        for &b in bytes {
            if std::mem::take(&mut self.escape) {
                match b {
                    b'x' | b'X' => return Typed::Quit,
                    ESCAPE => self.pending.push(ESCAPE),
                    other => self.pending.extend_from_slice(&[ESCAPE, other]),
                }
            } else if b == ESCAPE {
                self.escape = true;
            } else {
                self.pending.push(b);
            }
        }
        Typed::ForGuest
    }

    /// Bytes not yet accepted by the guest's UART.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// The guest's UART took the first `n` pending bytes.
    pub fn consumed(&mut self, n: usize) {
        self.pending.drain(..n.min(self.pending.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes_queue_and_drain() {
        let mut c = ConsoleInput::default();
        assert_eq!(c.push(b"ls\n"), Typed::ForGuest);
        assert_eq!(c.pending(), b"ls\n");
        c.consumed(2);
        assert_eq!(c.pending(), b"\n");
        c.consumed(99);
        assert!(c.pending().is_empty());
    }

    #[test]
    fn escape_sequences() {
        let mut c = ConsoleInput::default();
        assert_eq!(c.push(&[b'a', ESCAPE, ESCAPE, b'b', ESCAPE, b'c']), Typed::ForGuest);
        assert_eq!(c.pending(), &[b'a', ESCAPE, b'b', ESCAPE, b'c']);
        // The escape may be split across reads.
        assert_eq!(c.push(&[ESCAPE]), Typed::ForGuest);
        assert_eq!(c.push(b"x"), Typed::Quit);
        let mut d = ConsoleInput::default();
        assert_eq!(d.push(&[b'q', ESCAPE, b'X', b'z']), Typed::Quit);
        assert_eq!(d.pending(), b"q");
    }
}

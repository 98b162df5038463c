//! COM1: a 16550A UART (vm-superio's state machine) on the port bus.
//!
//! Output goes to any `Write` sink (the VMM's stdout); input is pushed by the VMM's event loop
//! with [`SerialConsole::enqueue_input`]. Interrupts go through an [`EventFdTrigger`] (irqfd).

use std::io::Write;
use std::sync::{Arc, Mutex};

use bus::BusDevice;
use serde::{Deserialize, Serialize};
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::Serial;

use super::serial_metrics::{CountingWriter, OutputLimit, UartMetrics};
use crate::interrupt::EventFdTrigger;
use crate::rate_limiter::{Clock, MonotonicClock, TokenBucket};

/// Standard PC port of COM1 and its 8 registers.
pub const COM1_PORT: u64 = 0x3f8;
pub const COM1_LEN: u64 = 8;
/// ISA IRQ line of COM1.
pub const COM1_IRQ: u32 = 4;

/// The UART's registers and unread input, for snapshots (vm-superio's `SerialState`, which
/// has no serde support).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialSnapshot {
    /// DLL, DLM, IER, IIR, LCR, LSR, MCR, MSR, SCR.
    pub regs: [u8; 9],
    pub in_buffer: Vec<u8>,
}

pub struct SerialConsole {
    uart: Serial<EventFdTrigger, NoEvents, CountingWriter>,
    metrics: Arc<UartMetrics>,
    /// Shared with the output writer (see [`SerialConsole::limit_output`]).
    limit: Arc<Mutex<Option<OutputLimit>>>,
}

type Counting = (CountingWriter, Arc<UartMetrics>, Arc<Mutex<Option<OutputLimit>>>);

fn counting(out: Box<dyn Write + Send>) -> Counting {
    let metrics = Arc::new(UartMetrics::default());
    let limit = Arc::new(Mutex::new(None));
    (
        CountingWriter {
            inner: out,
            metrics: metrics.clone(),
            limit: limit.clone(),
        },
        metrics,
        limit,
    )
}

impl SerialConsole {
    pub fn new(irq: EventFdTrigger, out: Box<dyn Write + Send>) -> Self {
        let (out, metrics, limit) = counting(out);
        Self {
            uart: Serial::new(irq, out),
            metrics,
            limit,
        }
    }

    /// Drops output beyond `bytes_per_sec` (bursts up to `burst` bytes; 0 = one second's worth),
    /// counting what it drops in `rate_limiter_dropped_bytes`.
    pub fn limit_output(&mut self, bytes_per_sec: u64, burst: u64) {
        let clock = MonotonicClock::default();
        let bucket = TokenBucket::new(bytes_per_sec, burst, clock.now());
        *self.limit.lock().unwrap_or_else(|e| e.into_inner()) = Some(OutputLimit { bucket, clock });
    }

    /// This UART's counters.
    pub fn metrics(&self) -> Arc<UartMetrics> {
        self.metrics.clone()
    }

    /// A UART in a snapshot's state (registers and unread input).
    pub fn from_state(irq: EventFdTrigger, out: Box<dyn Write + Send>, state: &SerialSnapshot) -> Result<Self, String> {
        let st = SerialState {
            baud_divisor_low: state.regs[0],
            baud_divisor_high: state.regs[1],
            interrupt_enable: state.regs[2],
            interrupt_identification: state.regs[3],
            line_control: state.regs[4],
            line_status: state.regs[5],
            modem_control: state.regs[6],
            modem_status: state.regs[7],
            scratch: state.regs[8],
            in_buffer: state.in_buffer.clone(),
        };
        let (out, metrics, limit) = counting(out);
        Serial::from_state(&st, irq, NoEvents, out)
            .map(|uart| Self { uart, metrics, limit })
            .map_err(|e| format!("the saved serial port state is invalid ({e:?})"))
    }

    pub fn save_state(&self) -> SerialSnapshot {
        let st = self.uart.state();
        SerialSnapshot {
            regs: [
                st.baud_divisor_low,
                st.baud_divisor_high,
                st.interrupt_enable,
                st.interrupt_identification,
                st.line_control,
                st.line_status,
                st.modem_control,
                st.modem_status,
                st.scratch,
            ],
            in_buffer: st.in_buffer,
        }
    }

    /// Queues bytes typed on the host for the guest to read; returns how many fit in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Room left in the receive FIFO: the event loop stops reading stdin while this is 0.
    pub fn input_room(&self) -> usize {
        self.uart.fifo_capacity()
    }
}

impl BusDevice for SerialConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data.len()) {
            (Ok(off), 1) => data[0] = self.uart.read(off),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), [value]) = (u8::try_from(offset), data) {
            // A failed write to the host's stdout (closed pipe) loses console output, which
            // must not stop the guest.
            let _ = self.uart.write(off, *value);
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_beyond_the_limit_is_dropped_and_counted() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let sink = Sink::default();
        let mut com = SerialConsole::new(EventFdTrigger::new(evt), Box::new(sink.clone()));
        // 3 bytes a second: a burst of 3 goes through at once, the rest of the line is dropped.
        com.limit_output(3, 3);
        for b in b"hello" {
            com.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hel");
        assert_eq!(com.metrics().rate_limiter_dropped_bytes.get(), 2);
        assert_eq!(com.metrics().write_count.get(), 3);
    }

    #[test]
    fn transmits_bytes_and_receives_input_with_interrupt() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = EventFdTrigger::new(evt.try_clone().unwrap());
        let sink = Sink::default();
        let mut com = SerialConsole::new(irq, Box::new(sink.clone()));
        for b in b"hi" {
            com.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi");
        assert_eq!(com.metrics().write_count.get(), 2);
        // Enable the received-data interrupt (IER bit 0), then push input.
        com.write(1, &[1]);
        assert_eq!(com.enqueue_input(b"x"), 1);
        assert!(evt.read().unwrap() >= 1);
        let mut lsr = [0u8];
        com.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0u8];
        com.read(0, &mut rbr);
        assert_eq!(rbr[0], b'x');
        // Wide or out-of-range accesses are ignored, not a crash.
        com.write(0, &[1, 2]);
        let mut wide = [0u8; 4];
        com.read(0, &mut wide);
        assert_eq!(wide, [0xff; 4]);
    }

    #[test]
    fn state_round_trips_with_pending_input() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut com = SerialConsole::new(EventFdTrigger::new(evt.try_clone().unwrap()), Box::new(Sink::default()));
        com.write(1, &[1]); // IER: received data
        com.write(7, &[0x5a]); // scratch
        com.enqueue_input(b"ab");
        let saved = com.save_state();
        assert_eq!(saved.in_buffer, b"ab");
        let mut back = SerialConsole::from_state(EventFdTrigger::new(evt), Box::new(Sink::default()), &saved).unwrap();
        assert_eq!(back.save_state(), saved);
        let mut b = [0u8];
        back.read(0, &mut b);
        assert_eq!(b[0], b'a');
        let mut huge = saved.clone();
        huge.in_buffer = vec![0; 100_000];
        let irq = EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
        assert!(SerialConsole::from_state(irq, Box::new(Sink::default()), &huge).is_err());
    }
}

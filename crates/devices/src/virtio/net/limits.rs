//! Rate limits of one network interface (Firecracker's `rx_rate_limiter`/`tx_rate_limiter`):
//! a token-bucket limiter per direction (`crate::rate_limiter`), and the receive gate.
//!
//! Transmit is simple: a throttled device stops taking chains off the transmit queue until its
//! limiter's timer fires. Receive needs more: the backend's fd stays readable while frames wait
//! in the tap, and the event loop's epoll is level-triggered, so a device that stopped reading
//! would be woken again at once, forever. The backend fd is therefore watched through a small
//! epoll of its own (the gate) that the event loop watches instead; a throttled receive closes
//! the gate (removes the backend fd from it) and the timer opens it again.

use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::rate_limiter::{Clock, Limits, RateLimiter};

/// The epoll fd that stands for the backend's fd while receive may run.
pub(crate) struct RxGate {
    epoll: Epoll,
    backend: RawFd,
    open: bool,
}

impl RxGate {
    pub(crate) fn new(backend: RawFd) -> std::io::Result<Self> {
        let epoll = Epoll::new()?;
        epoll.ctl(ControlOperation::Add, backend, EpollEvent::new(EventSet::IN, 0))?;
        Ok(Self {
            epoll,
            backend,
            open: true,
        })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Stops the backend's readiness from reaching the event loop.
    pub(crate) fn close(&mut self) {
        if self.open {
            match self
                .epoll
                .ctl(ControlOperation::Delete, self.backend, EpollEvent::default())
            {
                Ok(()) => self.open = false,
                Err(e) => log::error!("virtio-net: cannot close the receive gate: {e}"),
            }
        }
    }

    pub(crate) fn open(&mut self) {
        if !self.open {
            match self
                .epoll
                .ctl(ControlOperation::Add, self.backend, EpollEvent::new(EventSet::IN, 0))
            {
                Ok(()) => self.open = true,
                Err(e) => log::error!("virtio-net: cannot open the receive gate: {e}"),
            }
        }
    }
}

/// Both directions' limiters (`None`: unlimited) and, with a receive limit, the gate.
#[derive(Default)]
pub(crate) struct NetLimits {
    pub(crate) rx: Option<RateLimiter>,
    pub(crate) tx: Option<RateLimiter>,
    pub(crate) gate: Option<RxGate>,
}

impl NetLimits {
    /// Limiters for the non-zero limits; a receive gate if receive is limited and the backend
    /// has an fd.
    pub(crate) fn new(
        rx: Limits,
        tx: Limits,
        backend_fd: Option<RawFd>,
        clock: &dyn Fn() -> Box<dyn Clock>,
    ) -> std::io::Result<Self> {
        let limited = |l: &Limits| l.bps > 0 || l.iops > 0;
        let rx_limiter = if limited(&rx) {
            Some(RateLimiter::new(rx, clock())?)
        } else {
            None
        };
        let tx_limiter = if limited(&tx) {
            Some(RateLimiter::new(tx, clock())?)
        } else {
            None
        };
        let gate = match (&rx_limiter, backend_fd) {
            (Some(_), Some(fd)) => Some(RxGate::new(fd)?),
            _ => None,
        };
        Ok(Self {
            rx: rx_limiter,
            tx: tx_limiter,
            gate,
        })
    }
}

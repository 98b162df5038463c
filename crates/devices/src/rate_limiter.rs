//! I/O rate limiting for devices: [`TokenBucket`] (a budget refilled at a steady rate, with a
//! burst) and [`RateLimiter`], one bucket for bytes and one for operations plus the timerfd that
//! tells the event loop when a throttled device may run again.
//!
//! Debt semantics: a request is admitted when both buckets hold something, and then its whole
//! cost is taken, possibly leaving a bucket negative. A request therefore never waits for more
//! tokens than a bucket can hold, the long-run rate is exact, and a device does not need to undo
//! taking a chain off its queue. The clock is injected ([`Clock`]) so tests need no sleeping.
//! Written by hand: no rust-vmm crate provides a rate limiter.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

/// Where time comes from: [`Instant`] in hearth, a hand-moved clock in tests.
pub trait Clock: Send {
    fn now(&self) -> Duration;
}

/// Monotonic time since the limiter was made.
pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A clock that only moves when a test moves it.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct ManualClock(std::sync::Arc<std::sync::atomic::AtomicU64>);

#[cfg(test)]
impl ManualClock {
    pub(crate) fn advance(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// `rate` tokens a second, holding at most `burst` (it starts full).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// May go below zero (see the module header).
    tokens: i128,
    /// When `tokens` was last brought up to date.
    last: Duration,
}

impl TokenBucket {
    /// A bucket refilling `rate` tokens a second up to `burst` (0 means one second's worth).
    pub fn new(rate: u64, burst: u64, now: Duration) -> Self {
        let burst = if burst == 0 { rate } else { burst };
        Self {
            rate,
            burst,
            tokens: i128::from(burst),
            last: now,
        }
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.last).as_nanos();
        // Whole tokens only; the remainder of the interval carries over to the next refill.
        let add = elapsed.saturating_mul(u128::from(self.rate)) / 1_000_000_000;
        if add == 0 {
            return;
        }
        let add = i128::try_from(add).unwrap_or(i128::MAX);
        self.tokens = self.tokens.saturating_add(add).min(i128::from(self.burst));
        if self.tokens == i128::from(self.burst) {
            self.last = now;
        } else {
            // Advance by exactly the time those tokens took, so no fraction is lost.
            let used = u128::try_from(add).unwrap_or(0).saturating_mul(1_000_000_000) / u128::from(self.rate);
            self.last += Duration::from_nanos(u64::try_from(used).unwrap_or(u64::MAX));
        }
    }

    /// Tokens now (negative while in debt).
    pub fn tokens(&mut self, now: Duration) -> i128 {
        self.refill(now);
        self.tokens
    }

    pub(crate) fn take(&mut self, n: u64) {
        self.tokens = self.tokens.saturating_sub(i128::from(n));
    }

    /// How long until the bucket holds at least one token again.
    fn wait(&mut self, now: Duration) -> Duration {
        let missing = 1 - self.tokens(now);
        if missing <= 0 || self.rate == 0 {
            return Duration::ZERO;
        }
        let nanos = u128::try_from(missing).unwrap_or(0).saturating_mul(1_000_000_000);
        let nanos = nanos.div_ceil(u128::from(self.rate));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// A bandwidth bucket and an operations bucket (either optional) and a timerfd.
pub struct RateLimiter {
    bytes: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    clock: Box<dyn Clock>,
    timer: TimerFd,
    /// The timer is armed: the device is waiting for it, not for a guest kick.
    armed: bool,
}

/// Limits of one device: `bps` bytes and `iops` operations a second, 0 meaning no limit;
/// bursts default to one second's worth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub bps: u64,
    pub iops: u64,
    pub bps_burst: u64,
    pub iops_burst: u64,
}

impl RateLimiter {
    pub fn new(limits: Limits, clock: Box<dyn Clock>) -> std::io::Result<Self> {
        let now = clock.now();
        let bucket = |rate, burst| (rate > 0).then(|| TokenBucket::new(rate, burst, now));
        Ok(Self {
            bytes: bucket(limits.bps, limits.bps_burst),
            ops: bucket(limits.iops, limits.iops_burst),
            clock,
            timer: TimerFd::new()?,
            armed: false,
        })
    }

    /// New limits from now on (full buckets), e.g. from `PATCH /drives`; a pending timer stays
    /// armed and simply lets the device try again.
    pub fn set_limits(&mut self, limits: Limits) {
        let now = self.clock.now();
        let bucket = |rate, burst| (rate > 0).then(|| TokenBucket::new(rate, burst, now));
        self.bytes = bucket(limits.bps, limits.bps_burst);
        self.ops = bucket(limits.iops, limits.iops_burst);
    }

    /// May the device take another request now? When not, the timerfd is armed for the moment
    /// it may, and the device should stop taking requests until the event loop says so.
    pub fn admit(&mut self) -> bool {
        if self.armed {
            return false;
        }
        // Unlimited (every drive has a limiter so PATCH can set one): no clock read per request.
        if self.bytes.is_none() && self.ops.is_none() {
            return true;
        }
        let now = self.clock.now();
        let wait = [self.bytes.as_mut(), self.ops.as_mut()]
            .into_iter()
            .flatten()
            .map(|b| b.wait(now))
            .max()
            .unwrap_or(Duration::ZERO);
        if wait.is_zero() {
            return true;
        }
        match self.timer.reset(wait, None) {
            Ok(()) => self.armed = true,
            // Without a timer nothing would wake the device: let the request through.
            Err(e) => {
                log::error!("rate limiter: cannot arm the timerfd: {e}");
                return true;
            }
        }
        false
    }

    /// Charges one operation of `bytes` bytes.
    pub fn charge(&mut self, bytes: u64) {
        if let Some(b) = &mut self.bytes {
            b.take(bytes);
        }
        if let Some(b) = &mut self.ops {
            b.take(1);
        }
    }

    /// The timerfd fired (the event loop calls this before running the device again).
    /// Disarming also consumes the expiry, so the fd stops being readable.
    pub fn timer_fired(&mut self) {
        if let Err(e) = self.timer.clear() {
            log::error!("rate limiter: cannot clear the timerfd: {e}");
        }
        self.armed = false;
    }

    pub fn is_throttled(&self) -> bool {
        self.armed
    }
}

impl AsRawFd for RateLimiter {
    fn as_raw_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}

#[cfg(test)]
#[path = "rate_limiter_tests.rs"]
mod tests;

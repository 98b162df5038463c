//! Token buckets and the limiter against a clock the test moves by hand.

use super::*;

type FakeClock = ManualClock;

const MS: Duration = Duration::from_millis(1);

#[test]
fn a_bucket_refills_at_its_rate_up_to_its_burst() {
    let mut b = TokenBucket::new(1000, 500, Duration::ZERO);
    assert_eq!(b.tokens(Duration::ZERO), 500, "starts full");
    b.take(500);
    assert_eq!(b.tokens(100 * MS), 100);
    // Fractions carry over: 3 × 0.5 ms gives a whole token, then one more.
    let mut b = TokenBucket::new(1000, 10, Duration::ZERO);
    b.take(10);
    let half = Duration::from_micros(500);
    assert_eq!(b.tokens(half), 0);
    assert_eq!(b.tokens(2 * half), 1);
    assert_eq!(b.tokens(3 * half), 1);
    assert_eq!(b.tokens(4 * half), 2);
    assert_eq!(b.tokens(Duration::from_secs(60)), 10, "never above the burst");
    // Burst 0 means one second's worth.
    assert_eq!(TokenBucket::new(300, 0, Duration::ZERO).tokens(Duration::ZERO), 300);
}

#[test]
fn debt_is_paid_back_before_the_next_request() {
    let mut b = TokenBucket::new(1000, 100, Duration::ZERO);
    b.take(400); // a request bigger than the burst is admitted and leaves a debt of 300
    assert_eq!(b.tokens(Duration::ZERO), -300);
    assert_eq!(
        b.wait(Duration::ZERO),
        Duration::from_micros(301_000),
        "301 tokens at 1/ms"
    );
    assert_eq!(b.wait(301 * MS), Duration::ZERO);
}

#[test]
fn the_limiter_throttles_arms_its_timer_and_resumes() {
    let clock = FakeClock::default();
    let limits = Limits {
        bps: 1 << 20,
        iops: 100,
        bps_burst: 0,
        iops_burst: 10,
    };
    let mut l = RateLimiter::new(limits, Box::new(clock.clone())).unwrap();
    // 10 operations of 4 KiB: the ops burst runs out first.
    for i in 0..10 {
        assert!(l.admit(), "request {i}");
        l.charge(4096);
    }
    assert!(!l.admit(), "11th request over the 10-op burst");
    assert!(l.is_throttled());
    assert!(!l.admit(), "still throttled until the timer fires");
    // At 100 ops/s the next token comes after 10 ms (of the fake clock).
    clock.advance(10 * MS);
    l.timer_fired();
    assert!(l.admit());
    l.charge(4096);
    assert!(!l.admit());
    l.timer_fired();

    // Bandwidth: one request of 2 MiB at 1 MiB/s leaves a 1 MiB debt, paid back in ~1 s.
    let mut l = RateLimiter::new(
        Limits {
            bps: 1 << 20,
            ..Limits::default()
        },
        Box::new(clock.clone()),
    )
    .unwrap();
    assert!(l.admit());
    l.charge(2 << 20);
    assert!(!l.admit());
    l.timer_fired();
    clock.advance(Duration::from_millis(999));
    assert!(!l.admit(), "debt not paid back yet");
    l.timer_fired();
    clock.advance(2 * MS);
    assert!(l.admit());
}

#[test]
fn the_timerfd_is_armed_for_the_wait_and_readable_after_it() {
    // The real clock and timerfd: the limiter must arm the timer so the event loop wakes up.
    let mut l = RateLimiter::new(
        Limits {
            iops: 1000,
            iops_burst: 1,
            ..Limits::default()
        },
        Box::new(MonotonicClock::default()),
    )
    .unwrap();
    assert!(l.admit());
    l.charge(0);
    assert!(!l.admit());
    let mut pfd = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(n, 1, "the timerfd never fired");
    l.timer_fired();
    // SAFETY: as above; a zero timeout only checks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    assert_eq!(n, 0, "timer_fired consumed the expiry");
    assert!(l.admit());
}

#[test]
fn no_limits_never_throttle() {
    let mut l = RateLimiter::new(Limits::default(), Box::new(FakeClock::default())).unwrap();
    for _ in 0..1000 {
        assert!(l.admit());
        l.charge(u64::MAX);
    }
}

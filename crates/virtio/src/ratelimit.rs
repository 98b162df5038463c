//! Rate-limited logging for anything a guest can trigger (CONVENTIONS: a guest must not be able
//! to flood the host's logs). A fixed budget per process window: the first few messages per
//! second are logged, the rest are counted and summarised once the window ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

const PER_SECOND: u64 = 10;

static WINDOW: Mutex<Option<Instant>> = Mutex::new(None);
static IN_WINDOW: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Logs a warning caused by guest behaviour, at most [`PER_SECOND`] per second.
pub fn guest_warn(args: std::fmt::Arguments<'_>) {
    {
        let mut w = WINDOW.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let expired = match *w {
            Some(start) => now.duration_since(start).as_secs() >= 1,
            None => true,
        };
        if expired {
            *w = Some(now);
            IN_WINDOW.store(0, Ordering::Relaxed);
            let dropped = DROPPED.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                log::warn!("virtio: {dropped} more guest-caused warnings suppressed");
            }
        }
    }
    if IN_WINDOW.fetch_add(1, Ordering::Relaxed) < PER_SECOND {
        log::warn!("virtio: {args}");
    } else {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

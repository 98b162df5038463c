//! The balloon device: features, config space (`num_pages` target, `actual`), which queue
//! index does what, the stats buffer it holds between polls, and the control handle
//! ([`BalloonHandle`]) the VMM uses to change the target and read statistics.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ::virtio::queue::pop_chain;
use ::virtio::{guest_warn, ActivateError, Activated, DeviceCommon, VirtioDevice};
use virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::QueueT;
use vmm_sys_util::timerfd::TimerFd;

use super::handler::{discard, for_each_range, release_pfns, PageTally, PFN_SHIFT};
use super::stats::BalloonStats;

/// Feature bits (virtio 1.2 §5.5.3).
pub const F_STATS_VQ: u32 = 1;
pub const F_DEFLATE_ON_OOM: u32 = 2;
pub const F_FREE_PAGE_HINT: u32 = 3;
pub const F_REPORTING: u32 = 5;

const QUEUE_SIZE: u16 = 256;
const INFLATE: usize = 0;
const DEFLATE: usize = 1;
/// 4 KiB balloon pages per MiB.
const PAGES_PER_MIB: u32 = 1 << (20 - PFN_SHIFT);
/// Config space: num_pages, actual, free_page_hint_cmd_id, poison_val (all le32, §5.5.4).
const CONFIG_LEN: usize = 16;
const ACTUAL: std::ops::Range<usize> = 4..8;

/// What the balloon is asked to be (the CLI's `--balloon`, Firecracker's `PUT /balloon`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BalloonConfig {
    /// Target size: guest memory the balloon should hold, in MiB.
    pub amount_mib: u32,
    /// Let the guest take pages back from the balloon when it runs out of memory.
    pub deflate_on_oom: bool,
    /// Ask the guest for statistics this often; 0 = never.
    pub stats_polling_interval_s: u16,
    /// Offer free page reporting: the guest reports freed memory, which the host releases.
    pub free_page_reporting: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BalloonError {
    #[error("cannot create the queue eventfds of the balloon device")]
    EventFd(#[source] io::Error),
    #[error("cannot set up the balloon statistics timer")]
    Timer(#[source] io::Error),
    #[error("balloon target {asked} MiB is more than the guest's {guest} MiB of memory")]
    TooLarge { asked: u32, guest: u32 },
}

/// What the device has done since it was created (for tests, logs and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalloonCounters {
    /// Pages released to the host by inflate requests.
    pub inflated_pages: u64,
    /// Pages the guest took back by deflate requests.
    pub deflated_pages: u64,
    /// Bytes of free memory the guest reported, released to the host.
    pub reported_bytes: u64,
    /// PFNs outside guest RAM, ignored.
    pub ignored_pfns: u64,
    /// Statistics buffers received.
    pub stats_updates: u64,
}

/// Which queue index does what. The driver numbers only the queues it uses, in the order
/// inflate, deflate, stats, free page hint, reporting (§5.5.2; Linux's `init_vqs` leaves the
/// unnegotiated ones out and virtio-mmio's `vm_find_vqs` counts only those it sets up), so
/// the reporting queue is 2 without STATS_VQ and 3 with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLayout {
    pub stats: Option<usize>,
    pub reporting: Option<usize>,
}

impl QueueLayout {
    pub fn for_features(acked: u64) -> Self {
        let has = |bit: u32| acked & (1 << bit) != 0;
        let mut next = DEFLATE + 1;
        let mut take = |present: bool| {
            let i = present.then_some(next);
            next += usize::from(present);
            i
        };
        let stats = take(has(F_STATS_VQ));
        let _free_page_hint = take(has(F_FREE_PAGE_HINT));
        let reporting = take(has(F_REPORTING));
        Self { stats, reporting }
    }
}

pub struct Balloon {
    common: DeviceCommon,
    cfg: BalloonConfig,
    guest_mib: u32,
    config: [u8; CONFIG_LEN],
    layout: QueueLayout,
    /// The driver's stats buffer, kept until the next poll returns it (§5.5.6.3).
    stats_head: Option<u16>,
    stats: Option<BalloonStats>,
    timer: TimerFd,
    counters: BalloonCounters,
    descs: Vec<Descriptor>,
    /// From a snapshot, applied once the restored device is active again: the driver's
    /// `actual` and the stats buffer the device was holding (activation clears both).
    restored: Option<([u8; 4], Option<u16>)>,
}

/// Length of [`VirtioDevice::save_device`]'s bytes: target MiB, num_pages, actual (u32 each),
/// stats interval (u16), then a held stats buffer: flag (u8) and head (u16).
const SAVED_LEN: usize = 17;

impl Balloon {
    /// A balloon for a guest of `guest_mib` MiB.
    pub fn new(cfg: BalloonConfig, guest_mib: u32) -> Result<Self, BalloonError> {
        let mut avail = (1u64 << F_STATS_VQ) | ::virtio::features::RING_INDIRECT_DESC;
        let mut queues = vec![QUEUE_SIZE; 3];
        if cfg.deflate_on_oom {
            avail |= 1 << F_DEFLATE_ON_OOM;
        }
        if cfg.free_page_reporting {
            avail |= 1 << F_REPORTING;
            queues.push(QUEUE_SIZE);
        }
        let common = DeviceCommon::new(VIRTIO_ID_BALLOON, avail, &queues).map_err(BalloonError::EventFd)?;
        let timer = TimerFd::new().map_err(timer_err)?;
        set_nonblocking(timer.as_raw_fd()).map_err(BalloonError::Timer)?;
        let mut b = Self {
            common,
            cfg: BalloonConfig::default(),
            guest_mib,
            config: [0; CONFIG_LEN],
            layout: QueueLayout::for_features(0),
            stats_head: None,
            stats: None,
            timer,
            counters: BalloonCounters::default(),
            descs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            restored: None,
        };
        b.set_target_mib(cfg.amount_mib)?;
        b.set_stats_interval(cfg.stats_polling_interval_s)?;
        b.cfg = cfg;
        Ok(b)
    }

    /// Sets the target (`num_pages`) and tells the driver with a configuration interrupt.
    pub fn set_target_mib(&mut self, mib: u32) -> Result<(), BalloonError> {
        if mib > self.guest_mib {
            return Err(BalloonError::TooLarge {
                asked: mib,
                guest: self.guest_mib,
            });
        }
        self.cfg.amount_mib = mib;
        let pages = mib.saturating_mul(PAGES_PER_MIB);
        self.config[0..4].copy_from_slice(&pages.to_le_bytes());
        if let Some(a) = self.common.active() {
            a.interrupt.signal_config();
        }
        Ok(())
    }

    /// Polls the guest's statistics every `secs` seconds (0 stops polling).
    pub fn set_stats_interval(&mut self, secs: u16) -> Result<(), BalloonError> {
        self.cfg.stats_polling_interval_s = secs;
        if secs == 0 {
            return self.timer.clear().map_err(timer_err);
        }
        let d = Duration::from_secs(u64::from(secs));
        self.timer.reset(d, Some(d)).map_err(timer_err)
    }

    pub fn config(&self) -> BalloonConfig {
        self.cfg.clone()
    }

    pub fn target_pages(&self) -> u32 {
        read_le32(&self.config[0..4])
    }

    pub fn actual_pages(&self) -> u32 {
        read_le32(&self.config[ACTUAL])
    }

    /// The last statistics the guest sent, with the balloon's current size; `None` before the
    /// first arrive.
    pub fn stats(&self) -> Option<BalloonStats> {
        let mut s = self.stats.clone()?;
        s.target_pages = self.target_pages();
        s.actual_pages = self.actual_pages();
        s.target_mib = s.target_pages / PAGES_PER_MIB;
        s.actual_mib = s.actual_pages / PAGES_PER_MIB;
        Some(s)
    }

    pub fn counters(&self) -> BalloonCounters {
        self.counters
    }

    /// The statistics timer, for the event loop.
    pub fn timer_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }

    /// The statistics timer expired: give the driver its buffer back so it refills it.
    pub fn stats_timer_fired(&mut self) {
        // Non-blocking: the interval may have been changed (and the expiry cleared) since
        // the event loop saw the timer readable.
        let _ = self.timer.wait();
        let Some(head) = self.stats_head else { return };
        let Some(active) = self.common.active() else { return };
        let Some(q) = self.layout.stats.and_then(|i| active.queues.get_mut(i)) else {
            return;
        };
        match q.add_used(&active.mem, head, 0) {
            Ok(()) => {
                active.interrupt.signal_used();
                self.stats_head = None;
            }
            Err(e) => self
                .common
                .fail(format_args!("stats queue: cannot add to the used ring: {e}")),
        }
    }

    fn process_inflate_deflate(&mut self, index: usize) {
        let counters = &mut self.counters;
        self.common.process_queue(index, &mut self.descs, |mem, descs| {
            let bufs = descs.iter().filter(|d| !d.is_write_only()).map(|d| (d.addr(), d.len()));
            let mut t = PageTally::default();
            for_each_range(mem, bufs, |r| {
                let done = if index == INFLATE {
                    release_pfns(mem, r)
                } else {
                    // Deflate: the pages fault back in when the guest touches them.
                    PageTally {
                        pages: r.count,
                        outside: 0,
                    }
                };
                t.pages += done.pages;
                t.outside += done.outside;
            });
            if t.outside > 0 {
                guest_warn(format_args!(
                    "virtio-balloon: {} PFNs outside guest memory ignored",
                    t.outside
                ));
            }
            if index == INFLATE {
                counters.inflated_pages += t.pages;
            } else {
                counters.deflated_pages += t.pages;
            }
            counters.ignored_pfns += t.outside;
            0
        });
    }

    /// Free page reporting (§5.5.6.5): each buffer is free guest memory; release it, return it.
    fn process_reporting(&mut self, index: usize) {
        let counters = &mut self.counters;
        self.common.process_queue(index, &mut self.descs, |mem, descs| {
            for d in descs {
                let len = usize::try_from(d.len()).unwrap_or(0);
                match discard(mem, d.addr(), len) {
                    Ok(()) => counters.reported_bytes += u64::from(d.len()),
                    Err(e) => guest_warn(format_args!("virtio-balloon: reported page: {e}")),
                }
            }
            0
        });
    }

    /// A stats buffer arrived: read it and keep it until the next poll.
    fn process_stats(&mut self, index: usize) {
        let Some(active) = self.common.active() else { return };
        let Some(q) = active.queues.get_mut(index) else { return };
        let mut failure = None;
        loop {
            let head = match pop_chain(q, &active.mem, &mut self.descs) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    failure = Some(format!("stats queue: {e}"));
                    break;
                }
            };
            let mut s = self.stats.take().unwrap_or_default();
            let bufs = self
                .descs
                .iter()
                .filter(|d| !d.is_write_only())
                .map(|d| (d.addr(), d.len()));
            s.read_from(&active.mem, bufs);
            log::debug!("virtio-balloon: guest statistics: {}", s.summary());
            self.stats = Some(s);
            self.counters.stats_updates += 1;
            // The driver keeps one buffer in flight; should it send another, return the old.
            if let Some(old) = self.stats_head.replace(head) {
                if let Err(e) = q.add_used(&active.mem, old, 0) {
                    failure = Some(format!("stats queue: cannot add to the used ring: {e}"));
                    break;
                }
                active.interrupt.signal_used();
            }
        }
        if let Some(f) = failure {
            self.common.fail(format_args!("{f}"));
        }
    }
}

impl VirtioDevice for Balloon {
    fn common(&self) -> &DeviceCommon {
        &self.common
    }

    fn save_device(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(SAVED_LEN);
        v.extend_from_slice(&self.cfg.amount_mib.to_le_bytes());
        v.extend_from_slice(&self.config[0..4]);
        v.extend_from_slice(&self.config[ACTUAL]);
        v.extend_from_slice(&self.cfg.stats_polling_interval_s.to_le_bytes());
        v.push(u8::from(self.stats_head.is_some()));
        v.extend_from_slice(&self.stats_head.unwrap_or(0).to_le_bytes());
        v
    }

    fn restore_device(&mut self, state: &[u8]) -> Result<(), String> {
        if state.len() != SAVED_LEN {
            return Err(format!("balloon state is {} bytes, expected {SAVED_LEN}", state.len()));
        }
        let amount_mib = read_le32(&state[0..4]);
        let interval = u16::from_le_bytes([state[12], state[13]]);
        let head = u16::from_le_bytes([state[15], state[16]]);
        let head = match state[14] {
            0 => None,
            1 if head < QUEUE_SIZE => Some(head),
            _ => return Err(format!("balloon state holds an invalid stats buffer {head}")),
        };
        if amount_mib > self.guest_mib {
            return Err(format!("balloon target {amount_mib} MiB is larger than the guest"));
        }
        self.cfg.amount_mib = amount_mib;
        self.config[0..4].copy_from_slice(&state[4..8]);
        self.set_stats_interval(interval).map_err(|e| e.to_string())?;
        let mut actual = [0u8; 4];
        actual.copy_from_slice(&state[8..12]);
        self.restored = Some((actual, head));
        Ok(())
    }

    fn on_restored(&mut self) {
        if let Some((actual, head)) = self.restored.take() {
            self.config[ACTUAL].copy_from_slice(&actual);
            self.stats_head = head;
        }
    }
    fn common_mut(&mut self) -> &mut DeviceCommon {
        &mut self.common
    }
    fn config_space(&self) -> &[u8] {
        &self.config
    }

    /// Only `actual` is the driver's to write (§5.5.4).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start.checked_add(data.len()) {
            Some(end) if start >= ACTUAL.start && end <= ACTUAL.end => {
                self.config[start..end].copy_from_slice(data);
            }
            _ => guest_warn(format_args!(
                "virtio-balloon: write to config offset {offset:#x} (only 'actual' is writable) ignored"
            )),
        }
    }

    fn process_queue(&mut self, index: usize) {
        // Linux kicks the stats queue before DRIVER_OK; `activate` looks at it again.
        if !self.common.is_active() {
            return;
        }
        match index {
            INFLATE | DEFLATE => self.process_inflate_deflate(index),
            i if Some(i) == self.layout.stats => self.process_stats(i),
            i if Some(i) == self.layout.reporting => self.process_reporting(i),
            _ => guest_warn(format_args!("virtio-balloon: kick on unused queue {index}")),
        }
    }

    /// After a reset the driver starts over: no stats buffer is held, the balloon is empty.
    fn activate(&mut self, activated: Activated) -> Result<(), ActivateError> {
        self.layout = QueueLayout::for_features(self.acked_features());
        self.stats_head = None;
        self.config[ACTUAL].fill(0);
        self.store_activation(activated)?;
        // Linux primes the stats queue and kicks it before DRIVER_OK (init_vqs), when the
        // device ignores kicks: look at that queue again now, on the event loop.
        if let Some(evt) = self.layout.stats.and_then(|i| self.queue_evts().get(i)) {
            if let Err(e) = evt.write(1) {
                log::warn!("virtio-balloon: cannot schedule the stats queue: {e}");
            }
        }
        Ok(())
    }
}

fn read_le32(b: &[u8]) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[..4]);
    u32::from_le_bytes(v)
}

fn timer_err(e: vmm_sys_util::errno::Error) -> BalloonError {
    BalloonError::Timer(io::Error::from_raw_os_error(e.errno()))
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an fd we own; no memory is passed.
    let r = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The handle the VMM keeps to control a running balloon (the HTTP API's `/balloon`).
#[derive(Clone)]
pub struct BalloonHandle(Arc<Mutex<Balloon>>);

impl BalloonHandle {
    pub fn new(balloon: Balloon) -> Self {
        Self(Arc::new(Mutex::new(balloon)))
    }

    /// The device itself, for the transport and the event loop.
    pub fn device(&self) -> Arc<Mutex<Balloon>> {
        self.0.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Balloon> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_target_mib(&self, mib: u32) -> Result<(), BalloonError> {
        self.lock().set_target_mib(mib)
    }
    pub fn set_stats_interval(&self, secs: u16) -> Result<(), BalloonError> {
        self.lock().set_stats_interval(secs)
    }
    pub fn config(&self) -> BalloonConfig {
        self.lock().config()
    }
    pub fn stats(&self) -> Option<BalloonStats> {
        self.lock().stats()
    }
    pub fn actual_pages(&self) -> u32 {
        self.lock().actual_pages()
    }
    pub fn counters(&self) -> BalloonCounters {
        self.lock().counters()
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;

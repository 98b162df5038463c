//! The I/O bus: maps guest addresses (port I/O or MMIO) to devices.
//!
//! A vCPU exit for a port or MMIO access lands here: [`Bus::read`] / [`Bus::write`] find the
//! device whose range covers the address and call it with the offset into that range. The bus
//! knows nothing about KVM; it is shared between vCPU threads (`Arc<Bus>`), and each device sits
//! behind its own mutex so that two vCPUs touching different devices never contend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device reachable through the bus. `offset` is relative to the base of the range the device
/// was inserted at; `data.len()` is the access width (1, 2, 4 or 8 bytes).
pub trait BusDevice: Send {
    /// Guest read: fill `data`. Unhandled reads should leave `data` as all-ones (as open bus).
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A half-open address range `[base, base + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusRange {
    pub base: u64,
    pub len: u64,
}

impl BusRange {
    /// Last address in the range (ranges are non-empty and never wrap; `insert` checks).
    fn last(&self) -> u64 {
        self.base + (self.len - 1)
    }
    fn overlaps(&self, other: &BusRange) -> bool {
        self.base <= other.last() && other.base <= self.last()
    }
    fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.len
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty")]
    EmptyRange { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} wraps past the end of the address space")]
    Wraps { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} overlaps a device already at {other:#x}")]
    Overlap { base: u64, len: u64, other: u64 },
}

pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Outcome of dispatching one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// A device handled the access.
    Handled,
    /// No device covers the address (reads return all-ones).
    Unmapped,
}

/// A set of non-overlapping device ranges.
#[derive(Default)]
pub struct Bus {
    devices: BTreeMap<u64, (BusRange, SharedDevice)>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `device` at `[base, base + len)`. Overlapping another device is an error.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let range = BusRange { base, len };
        if len == 0 {
            return Err(BusError::EmptyRange { base, len });
        }
        if base.checked_add(len - 1).is_none() {
            return Err(BusError::Wraps { base, len });
        }
        if let Some((r, _)) = self.devices.values().find(|(r, _)| r.overlaps(&range)) {
            return Err(BusError::Overlap {
                base,
                len,
                other: r.base,
            });
        }
        self.devices.insert(base, (range, device));
        Ok(())
    }

    /// Finds the device covering `addr` and the offset of `addr` in its range.
    fn resolve(&self, addr: u64) -> Option<(&SharedDevice, u64)> {
        let (_, (range, dev)) = self.devices.range(..=addr).next_back()?;
        range.contains(addr).then(|| (dev, addr - range.base))
    }

    /// Dispatches a read at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Dispatch {
        match self.resolve(addr) {
            Some((dev, offset)) => {
                lock(dev).read(offset, data);
                Dispatch::Handled
            }
            None => {
                data.fill(0xff);
                Dispatch::Unmapped
            }
        }
    }

    /// Dispatches a write at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Dispatch {
        match self.resolve(addr) {
            Some((dev, offset)) => {
                lock(dev).write(offset, data);
                Dispatch::Handled
            }
            None => Dispatch::Unmapped,
        }
    }
}

/// Locks a device. A device whose previous holder panicked is still usable: device state
/// machines keep their invariants between calls, and a poisoned lock must not take the VMM down.
fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }
    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(u8::try_from(offset & 0xff).unwrap_or(0));
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range_with_offsets() {
        let mut bus = Bus::new();
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        bus.insert(b.clone(), 0x400, 0x10).unwrap();
        assert_eq!(bus.write(0x3f9, &[7]), Dispatch::Handled);
        assert_eq!(bus.write(0x40f, &[1, 2]), Dispatch::Handled);
        assert_eq!(bus.write(0x410, &[1]), Dispatch::Unmapped);
        assert_eq!(bus.write(0x3f7, &[1]), Dispatch::Unmapped);
        assert_eq!(a.lock().unwrap().writes, vec![(1, vec![7])]);
        assert_eq!(b.lock().unwrap().writes, vec![(0xf, vec![1, 2])]);
        let mut data = [0u8; 4];
        assert_eq!(bus.read(0x3fc, &mut data), Dispatch::Handled);
        assert_eq!(data, [4; 4]);
        assert_eq!(bus.read(0x500, &mut data), Dispatch::Unmapped);
        assert_eq!(data, [0xff; 4]);
    }

    #[test]
    fn rejects_overlaps_and_empty_ranges() {
        let mut bus = Bus::new();
        let d = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(d.clone(), 0x1000, 0x100).unwrap();
        assert!(matches!(
            bus.insert(d.clone(), 0x10ff, 1),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(d.clone(), 0xf00, 0x101),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(d.clone(), 0x0, 0),
            Err(BusError::EmptyRange { .. })
        ));
        bus.insert(d.clone(), 0x1100, 1).unwrap();
        bus.insert(d, 0xfff, 1).unwrap();
    }

    #[test]
    fn range_at_top_of_address_space_does_not_wrap() {
        let mut bus = Bus::new();
        let d = Arc::new(Mutex::new(Recorder::default()));
        assert!(matches!(
            bus.insert(d.clone(), u64::MAX - 1, 16),
            Err(BusError::Wraps { .. })
        ));
        bus.insert(d, u64::MAX - 1, 2).unwrap();
        assert_eq!(bus.write(u64::MAX, &[1]), Dispatch::Handled);
        assert_eq!(bus.write(0, &[1]), Dispatch::Unmapped);
    }
}

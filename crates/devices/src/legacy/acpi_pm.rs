//! ACPI fixed-hardware power management registers (ACPI 6.5 §4.8.3): the PM1a event block
//! (PM1_STS, PM1_EN) and the PM1a control block (PM1_CNT), six bytes of port I/O that the
//! FADT points at. They exist so a guest can run in full ACPI mode (keeping its legacy PIC and
//! ISA interrupts) and so that `poweroff` in the guest ends the VM: Linux's ACPI S5 path
//! writes SLP_TYP = the `_S5_` value from the DSDT together with SLP_EN into PM1_CNT.
//!
//! There is no SMI command port (FADT.SMI_CMD = 0): the machine is always in ACPI mode, so
//! SCI_EN reads as 1 and cannot be cleared. hearth raises no fixed events (no PM timer, no
//! power button), so PM1_STS reads 0; PM1_EN keeps what the guest writes. A write of SLP_EN
//! with any other sleep type (hearth declares no S1-S4) is ignored.

use bus::BusDevice;

use crate::interrupt::Interrupt;

/// Port of the PM1a event block; the control block follows it.
pub const PM_PORT: u64 = 0x600;
/// PM1a_EVT_BLK (4 bytes: PM1_STS, PM1_EN) then PM1a_CNT_BLK (2 bytes: PM1_CNT).
pub const PM_LEN: u64 = 6;
pub const PM1_EVT_LEN: u8 = 4;
pub const PM1_CNT_LEN: u8 = 2;
/// Offset of PM1_CNT from [`PM_PORT`].
pub const PM1_CNT_OFFSET: u64 = 4;
/// The SLP_TYP value the DSDT's `_S5_` package gives for soft-off.
pub const SLP_TYP_S5: u16 = 5;

const PM1_EN: u64 = 2;
const SCI_EN: u16 = 1 << 0;
const BM_RLD: u16 = 1 << 1;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0x7 << SLP_TYP_SHIFT;
const SLP_EN: u16 = 1 << 13;

/// The PM1a registers and the line that powers the machine off.
pub struct AcpiPm {
    enable: u16,
    control: u16,
    power_off: Box<dyn Interrupt>,
}

impl AcpiPm {
    /// `power_off` is raised when the guest enters S5 (the VM ends as after a guest reset).
    pub fn new(power_off: Box<dyn Interrupt>) -> Self {
        Self {
            enable: 0,
            control: SCI_EN,
            power_off,
        }
    }

    /// The six register bytes as the guest reads them.
    fn image(&self) -> [u8; 6] {
        let [e0, e1] = self.enable.to_le_bytes();
        let [c0, c1] = (self.control | SCI_EN).to_le_bytes();
        [0, 0, e0, e1, c0, c1]
    }

    fn write_control(&mut self, value: u16) {
        // SLP_EN and GBL_RLS are write-only; SCI_EN is fixed; keep BM_RLD and SLP_TYP.
        self.control = SCI_EN | (value & (BM_RLD | SLP_TYP_MASK));
        if value & SLP_EN != 0 && (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT == SLP_TYP_S5 {
            if let Err(e) = self.power_off.raise() {
                ::virtio::guest_warn(format_args!("acpi: cannot power off: {e}"));
            }
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let image = self.image();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|a| image.get(a))
                .copied()
                .unwrap_or(0xff);
        }
    }

    /// Accesses of 1, 2 or 4 bytes at any offset: each register takes the bytes that fall in
    /// it (merged with its other byte when only one is written). PM1_STS is write-1-to-clear
    /// and no status bit is ever set, so writes to it change nothing.
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut image = self.image();
        let mut touched = [false; 6];
        for (i, b) in data.iter().enumerate() {
            let Some(at) = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .filter(|&a| a < image.len())
            else {
                continue;
            };
            image[at] = *b;
            touched[at] = true;
        }
        let word = |at: usize| u16::from_le_bytes([image[at], image[at + 1]]);
        let en = usize::try_from(PM1_EN).unwrap_or(2);
        if touched[en] || touched[en + 1] {
            self.enable = word(en);
        }
        let cnt = usize::try_from(PM1_CNT_OFFSET).unwrap_or(4);
        if touched[cnt] || touched[cnt + 1] {
            // A byte write of the low half must not repeat an old SLP_EN: it is write-only.
            let value = if touched[cnt + 1] {
                word(cnt)
            } else {
                word(cnt) & !SLP_EN
            };
            self.write_control(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    struct Count(Arc<AtomicUsize>);
    impl Interrupt for Count {
        fn raise(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn pm() -> (AcpiPm, Arc<AtomicUsize>) {
        let n = Arc::new(AtomicUsize::new(0));
        (AcpiPm::new(Box::new(Count(n.clone()))), n)
    }

    fn read16(pm: &mut AcpiPm, offset: u64) -> u16 {
        let mut b = [0u8; 2];
        pm.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    #[test]
    fn always_in_acpi_mode_and_no_events() {
        let (mut pm, _) = pm();
        assert_eq!(read16(&mut pm, PM1_CNT_OFFSET) & SCI_EN, SCI_EN);
        pm.write(PM1_CNT_OFFSET, &0u16.to_le_bytes());
        assert_eq!(
            read16(&mut pm, PM1_CNT_OFFSET) & SCI_EN,
            SCI_EN,
            "SCI_EN cannot be cleared"
        );
        pm.write(0, &0xffffu16.to_le_bytes());
        assert_eq!(read16(&mut pm, 0), 0, "PM1_STS has no bits set");
    }

    #[test]
    fn enable_register_keeps_its_value_in_any_access_width() {
        let (mut pm, _) = pm();
        pm.write(PM1_EN, &0x0120u16.to_le_bytes());
        assert_eq!(read16(&mut pm, PM1_EN), 0x0120);
        pm.write(PM1_EN + 1, &[0x03]);
        assert_eq!(read16(&mut pm, PM1_EN), 0x0320);
        // One 32-bit access covering PM1_STS and PM1_EN.
        pm.write(0, &0x0001_ffffu32.to_le_bytes());
        let mut b = [0u8; 4];
        pm.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x0001_0000);
    }

    #[test]
    fn s5_powers_off_other_sleep_types_do_not() {
        let (mut pm, n) = pm();
        for typ in [0u16, 1, 3, 7] {
            pm.write(PM1_CNT_OFFSET, &((typ << SLP_TYP_SHIFT) | SLP_EN).to_le_bytes());
        }
        assert_eq!(n.load(Ordering::SeqCst), 0);
        // Linux writes SLP_TYP first, then SLP_TYP | SLP_EN.
        pm.write(PM1_CNT_OFFSET, &(SLP_TYP_S5 << SLP_TYP_SHIFT).to_le_bytes());
        assert_eq!(n.load(Ordering::SeqCst), 0, "SLP_TYP alone does nothing");
        let v = read16(&mut pm, PM1_CNT_OFFSET);
        assert_eq!(v & SLP_EN, 0, "SLP_EN reads as 0");
        pm.write(PM1_CNT_OFFSET, &(v | SLP_EN).to_le_bytes());
        assert_eq!(n.load(Ordering::SeqCst), 1);
        // Rewriting only the low byte does not repeat SLP_EN.
        pm.write(PM1_CNT_OFFSET, &[0x01]);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn outside_the_block_reads_open_bus_and_writes_are_ignored() {
        let (mut pm, n) = pm();
        let mut b = [0u8; 4];
        pm.read(4, &mut b);
        assert_eq!(&b[2..], &[0xff, 0xff]);
        pm.write(6, &[0xff, 0xff]);
        pm.write(u64::MAX, &[0xff]);
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }
}

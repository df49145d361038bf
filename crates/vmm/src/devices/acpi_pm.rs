//! ACPI fixed hardware: the PM1a event and control blocks and the PM timer.
//!
//! The guest powers off by writing SLP_TYP = [`S5_SLEEP_TYPE`] with SLP_EN
//! to PM1a_CNT; the DSDT's `\_S5` object gives it that value. The host asks
//! the guest to shut down by pressing the fixed-feature power button, which
//! sets PWRBTN_STS and raises the SCI while the guest has PWRBTN_EN set
//! (ACPI 6.5 §4.8.2.1 and §4.8.3.1).

use std::sync::Arc;
use std::time::Instant;

use crate::bus::BusDevice;
use crate::exit::{ExitSignal, VmExit};

/// First port of the PM block: PM1a_EVT (status, enable), PM1a_CNT, PM_TMR.
pub const PM_PORT_BASE: u16 = 0x600;
/// Length of the PM block.
pub const PM_PORT_COUNT: u16 = 12;
/// PM1a event block (status word, then enable word).
pub const PM1A_EVT_PORT: u16 = PM_PORT_BASE;
/// Length of the PM1a event block.
pub const PM1_EVT_LEN: u8 = 4;
/// PM1a control block.
pub const PM1A_CNT_PORT: u16 = PM_PORT_BASE + 4;
/// Length of the PM1a control block.
pub const PM1_CNT_LEN: u8 = 2;
/// PM timer (32 bits).
pub const PM_TMR_PORT: u16 = PM_PORT_BASE + 8;
/// Length of the PM timer block.
pub const PM_TMR_LEN: u8 = 4;
/// The SCI's ISA interrupt.
pub const SCI_IRQ: u32 = 9;
/// SLP_TYP value of the S5 (soft off) state, as published in `\_S5`.
pub const S5_SLEEP_TYPE: u16 = 5;

const PM1_STS_PWRBTN: u16 = 1 << 8;
const PM1_STS_WAK: u16 = 1 << 15;
const PM1_CNT_SCI_EN: u16 = 1 << 0;
const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;
const PM1_CNT_SLP_TYP_MASK: u16 = 0x7 << PM1_CNT_SLP_TYP_SHIFT;
const PM1_CNT_SLP_EN: u16 = 1 << 13;

/// The PM timer runs at 3.579545 MHz (ACPI 6.5 §4.8.3.3).
const PM_TIMER_HZ: u128 = 3_579_545;

/// Raises or lowers the SCI line.
pub trait SciLine: Send {
    /// Sets the line's level.
    fn set_level(&self, asserted: bool);
}

/// The PM1 registers and timer.
pub struct AcpiPm {
    status: u16,
    enable: u16,
    control: u16,
    sci_asserted: bool,
    sci: Box<dyn SciLine>,
    exit: Arc<ExitSignal>,
    timer_start: Instant,
}

impl AcpiPm {
    /// Creates the block; the system starts in ACPI mode (SCI_EN set)
    /// because there is no SMI command port to switch modes.
    pub fn new(sci: Box<dyn SciLine>, exit: Arc<ExitSignal>) -> AcpiPm {
        AcpiPm {
            status: 0,
            enable: 0,
            control: PM1_CNT_SCI_EN,
            sci_asserted: false,
            sci,
            exit,
            timer_start: Instant::now(),
        }
    }

    /// Presses the power button: the guest sees a power button event.
    pub fn press_power_button(&mut self) {
        self.status |= PM1_STS_PWRBTN;
        self.update_sci();
    }

    /// Returns true when the guest has enabled power button events, i.e.
    /// an OS that handles them is running.
    pub fn power_button_enabled(&self) -> bool {
        self.enable & PM1_STS_PWRBTN != 0
    }

    fn update_sci(&mut self) {
        let asserted = self.status & self.enable != 0;
        if asserted != self.sci_asserted {
            self.sci_asserted = asserted;
            self.sci.set_level(asserted);
        }
    }

    fn write_control(&mut self, value: u16) {
        // SCI_EN is read-only: the system never leaves ACPI mode.
        self.control = (value & !PM1_CNT_SLP_EN) | PM1_CNT_SCI_EN;
        if value & PM1_CNT_SLP_EN == 0 {
            return;
        }
        let sleep_type = (value & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT;
        if sleep_type == S5_SLEEP_TYPE {
            self.exit.trigger(VmExit::PowerOff);
        } else {
            // Only S5 is published in the DSDT, so a guest never asks for
            // another state unless it ignores the tables.
            log::debug!("pm: ignoring request for sleep type {sleep_type}");
        }
    }

    fn timer(&self) -> u32 {
        let ticks = self.timer_start.elapsed().as_nanos() * PM_TIMER_HZ / 1_000_000_000;
        ticks as u32
    }

    fn register_bytes(&self, offset: u64) -> [u8; 4] {
        match offset {
            0..4 => {
                let [s0, s1] = self.status.to_le_bytes();
                let [e0, e1] = self.enable.to_le_bytes();
                [s0, s1, e0, e1]
            }
            4..8 => {
                let [c0, c1] = self.control.to_le_bytes();
                [c0, c1, 0, 0]
            }
            _ => self.timer().to_le_bytes(),
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let bytes = self.register_bytes(offset);
        let start = (offset % 4) as usize;
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = bytes.get(start + i).copied().unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut value = [0u8; 2];
        let len = data.len().min(2);
        value[..len].copy_from_slice(&data[..len]);
        let value = u16::from_le_bytes(value);
        match (offset, data.len()) {
            // Status bits are write-one-to-clear.
            (0, 1 | 2) => self.status &= !value,
            (1, 1) => self.status &= !(value << 8),
            (0, 4) => {
                self.status &= !value;
                self.enable = u16::from_le_bytes([data[2], data[3]]);
            }
            (2, 1 | 2) => {
                self.enable = if data.len() == 1 {
                    (self.enable & 0xff00) | value
                } else {
                    value
                }
            }
            (3, 1) => self.enable = (self.enable & 0x00ff) | (value << 8),
            (4, 2) => self.write_control(value),
            (4, 1) => self.write_control((self.control & 0xff00) | value),
            (5, 1) => self.write_control((self.control & 0x00ff) | (value << 8)),
            _ => {}
        }
        self.status &= !PM1_STS_WAK;
        self.update_sci();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct RecordingSci(Arc<Mutex<Vec<bool>>>);

    impl SciLine for RecordingSci {
        fn set_level(&self, asserted: bool) {
            self.0.lock().unwrap().push(asserted);
        }
    }

    fn pm() -> (AcpiPm, Arc<ExitSignal>, Arc<Mutex<Vec<bool>>>) {
        let levels = Arc::new(Mutex::new(Vec::new()));
        let exit = Arc::new(ExitSignal::new());
        let pm = AcpiPm::new(Box::new(RecordingSci(levels.clone())), exit.clone());
        (pm, exit, levels)
    }

    #[test]
    fn s5_request_powers_off() {
        let (mut pm, exit, _) = pm();
        let value = (S5_SLEEP_TYPE << PM1_CNT_SLP_TYP_SHIFT) | PM1_CNT_SLP_EN;
        pm.write(4, &value.to_le_bytes());
        assert_eq!(exit.get(), Some(VmExit::PowerOff));
    }

    #[test]
    fn sleep_type_without_slp_en_does_nothing() {
        let (mut pm, exit, _) = pm();
        let value = S5_SLEEP_TYPE << PM1_CNT_SLP_TYP_SHIFT;
        pm.write(4, &value.to_le_bytes());
        assert_eq!(exit.get(), None);
    }

    #[test]
    fn control_reads_sci_enabled() {
        let (mut pm, _, _) = pm();
        let mut data = [0u8; 2];
        pm.read(4, &mut data);
        assert_eq!(u16::from_le_bytes(data), PM1_CNT_SCI_EN);
    }

    #[test]
    fn power_button_raises_sci_only_when_enabled() {
        let (mut pm, _, levels) = pm();
        pm.press_power_button();
        assert_eq!(*levels.lock().unwrap(), Vec::<bool>::new());
        pm.write(2, &PM1_STS_PWRBTN.to_le_bytes());
        assert_eq!(*levels.lock().unwrap(), vec![true]);
    }

    #[test]
    fn clearing_status_lowers_sci() {
        let (mut pm, _, levels) = pm();
        pm.write(2, &PM1_STS_PWRBTN.to_le_bytes());
        pm.press_power_button();
        pm.write(0, &PM1_STS_PWRBTN.to_le_bytes());
        assert_eq!(*levels.lock().unwrap(), vec![true, false]);
        let mut data = [0u8; 2];
        pm.read(0, &mut data);
        assert_eq!(u16::from_le_bytes(data), 0);
    }

    #[test]
    fn timer_advances() {
        let (mut pm, _, _) = pm();
        let mut first = [0u8; 4];
        pm.read(8, &mut first);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut second = [0u8; 4];
        pm.read(8, &mut second);
        assert!(u32::from_le_bytes(second) > u32::from_le_bytes(first));
    }
}

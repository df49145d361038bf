//! The MC146818 CMOS real-time clock and NVRAM (ports 0x70 and 0x71).
//!
//! The clock shows the host's UTC time plus an offset the guest can change
//! by writing the time registers. No update cycle is ever in progress
//! (register A's UIP bit reads 0), so a guest reading the clock never
//! waits, and no RTC interrupts are generated. The NVRAM carries the
//! memory sizes and CPU count where SeaBIOS looks for them.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;

/// Index port; data is at the next port.
pub const CMOS_PORT_BASE: u16 = 0x70;
/// Index and data ports.
pub const CMOS_PORT_COUNT: u16 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_DAY_OF_WEEK: u8 = 0x06;
const REG_DAY_OF_MONTH: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

// Register A: 32.768 kHz time base, 1024 Hz periodic rate; UIP never set.
const REG_A_DEFAULT: u8 = 0x26;
// Register B: 24-hour mode, BCD.
const REG_B_24_HOUR: u8 = 0x02;
const REG_B_BINARY: u8 = 0x04;
// Register D: valid RAM and time.
const REG_D_VALID: u8 = 0x80;

/// A calendar date and time of day in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2026.
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=59.
    pub second: u32,
    /// 1 (Sunday) ..= 7 (Saturday), as the RTC counts.
    pub day_of_week: u32,
}

impl DateTime {
    /// Converts seconds since 1970-01-01 UTC to a calendar date.
    pub fn from_unix(seconds: i64) -> DateTime {
        let days = seconds.div_euclid(86_400);
        let second_of_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: (second_of_day / 3600) as u32,
            minute: (second_of_day / 60 % 60) as u32,
            second: (second_of_day % 60) as u32,
            // 1970-01-01 was a Thursday (day 5 counting Sunday as 1).
            day_of_week: ((days + 4).rem_euclid(7) + 1) as u32,
        }
    }

    /// Converts back to seconds since 1970-01-01 UTC.
    pub fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

// Gregorian calendar conversions on days since 1970-01-01, computed in
// 400-year eras (146097 days each) counted from 0000-03-01, so that the
// leap day falls at the end of each computational year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_index = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_index + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn to_bcd(value: u32) -> u8 {
    (((value / 10) % 10) << 4 | (value % 10)) as u8
}

fn from_bcd(value: u8) -> u32 {
    u32::from(value >> 4) * 10 + u32::from(value & 0x0f)
}

/// Memory sizes written into NVRAM for firmware.
#[derive(Clone, Copy, Debug, Default)]
pub struct NvramMemory {
    /// Bytes of RAM below the PCI hole.
    pub low_bytes: u64,
    /// Bytes of RAM above 4 GiB.
    pub high_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
}

/// The RTC and its 128 bytes of NVRAM.
pub struct Cmos {
    index: u8,
    nvram: [u8; 128],
    offset_seconds: i64,
    clock: fn() -> i64,
}

fn host_unix_seconds() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(elapsed) => elapsed.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    }
}

impl Cmos {
    /// Creates the RTC running on the host's clock, with NVRAM describing
    /// `memory`.
    pub fn new(memory: NvramMemory) -> Cmos {
        Cmos::with_clock(memory, host_unix_seconds)
    }

    /// Creates the RTC on a given clock (seconds since the epoch), for tests.
    pub fn with_clock(memory: NvramMemory, clock: fn() -> i64) -> Cmos {
        let mut nvram = [0u8; 128];
        nvram[REG_A as usize] = REG_A_DEFAULT;
        nvram[REG_B as usize] = REG_B_24_HOUR;
        nvram[REG_D as usize] = REG_D_VALID;
        write_memory_sizes(&mut nvram, memory);
        Cmos {
            index: 0,
            nvram,
            offset_seconds: 0,
            clock,
        }
    }

    fn now(&self) -> DateTime {
        DateTime::from_unix((self.clock)() + self.offset_seconds)
    }

    fn encode(&self, value: u32) -> u8 {
        if self.nvram[REG_B as usize] & REG_B_BINARY != 0 {
            value as u8
        } else {
            to_bcd(value)
        }
    }

    fn decode(&self, value: u8) -> u32 {
        if self.nvram[REG_B as usize] & REG_B_BINARY != 0 {
            u32::from(value)
        } else {
            from_bcd(value)
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.nvram[REG_B as usize] & REG_B_24_HOUR != 0 {
            return self.encode(hour);
        }
        // 12-hour mode: 12, 1..11 with bit 7 set after noon.
        let pm = if hour >= 12 { 0x80 } else { 0 };
        let twelve = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(twelve) | pm
    }

    fn decode_hour(&self, value: u8) -> u32 {
        if self.nvram[REG_B as usize] & REG_B_24_HOUR != 0 {
            return self.decode(value);
        }
        let hour = self.decode(value & 0x7f) % 12;
        if value & 0x80 != 0 { hour + 12 } else { hour }
    }

    fn read_register(&mut self, index: u8) -> u8 {
        let now = self.now();
        match index {
            REG_SECONDS => self.encode(now.second),
            REG_MINUTES => self.encode(now.minute),
            REG_HOURS => self.encode_hour(now.hour),
            REG_DAY_OF_WEEK => self.encode(now.day_of_week),
            REG_DAY_OF_MONTH => self.encode(now.day),
            REG_MONTH => self.encode(now.month),
            REG_YEAR => self.encode(now.year.rem_euclid(100) as u32),
            REG_CENTURY => self.encode(now.year.div_euclid(100) as u32),
            REG_C => 0,
            _ => self.nvram[index as usize],
        }
    }

    // Setting one time field moves the whole clock by the difference, so
    // that a guest writing all fields one after another ends up at the time
    // it wrote.
    fn write_register(&mut self, index: u8, value: u8) {
        let mut time = self.now();
        match index {
            REG_SECONDS => time.second = self.decode(value).min(59),
            REG_MINUTES => time.minute = self.decode(value).min(59),
            REG_HOURS => time.hour = self.decode_hour(value).min(23),
            REG_DAY_OF_MONTH => time.day = self.decode(value).clamp(1, 31),
            REG_MONTH => time.month = self.decode(value).clamp(1, 12),
            REG_YEAR => {
                time.year = time.year.div_euclid(100) * 100 + i64::from(self.decode(value) % 100)
            }
            REG_CENTURY => {
                time.year = i64::from(self.decode(value)) * 100 + time.year.rem_euclid(100)
            }
            // The day of week follows from the date.
            REG_DAY_OF_WEEK | REG_C | REG_D => return,
            // Keep the time base and rate bits, never UIP.
            REG_A => {
                self.nvram[REG_A as usize] = value & 0x7f;
                return;
            }
            _ => {
                self.nvram[index as usize] = value;
                return;
            }
        }
        self.offset_seconds = time.to_unix() - (self.clock)();
    }
}

fn write_memory_sizes(nvram: &mut [u8; 128], memory: NvramMemory) {
    const MIB: u64 = 1 << 20;
    // Base memory in KiB (640).
    nvram[0x15] = 0x80;
    nvram[0x16] = 0x02;
    // Extended memory from 1 MiB to 64 MiB, in KiB.
    let extended_kib = (memory.low_bytes.saturating_sub(MIB) / 1024).min(0xfc00) as u16;
    nvram[0x17..0x19].copy_from_slice(&extended_kib.to_le_bytes());
    nvram[0x30..0x32].copy_from_slice(&extended_kib.to_le_bytes());
    // Memory from 16 MiB up to the PCI hole, in 64 KiB units.
    let above_16m = (memory.low_bytes.saturating_sub(16 * MIB) / 65_536).min(0xffff) as u16;
    nvram[0x34..0x36].copy_from_slice(&above_16m.to_le_bytes());
    // Memory above 4 GiB, in 64 KiB units, three bytes.
    let above_4g = (memory.high_bytes / 65_536).min(0xff_ffff) as u32;
    nvram[0x5b..0x5e].copy_from_slice(&above_4g.to_le_bytes()[..3]);
    // Number of CPUs minus one, where SeaBIOS reads it.
    nvram[0x5f] = memory.vcpus.saturating_sub(1);
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if data.len() != 1 {
            return;
        }
        data[0] = match offset {
            0 => self.index,
            _ => self.read_register(self.index),
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 {
            return;
        }
        match offset {
            // Bit 7 of the index port is the NMI mask, not part of the index.
            0 => self.index = data[0] & 0x7f,
            _ => self.write_register(self.index, data[0]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-04 21:30:15 UTC, a Friday.
    const FIXED_NOW: i64 = 1_796_419_815;

    fn fixed_clock() -> i64 {
        FIXED_NOW
    }

    fn read(cmos: &mut Cmos, index: u8) -> u8 {
        let mut data = [0u8];
        cmos.write(0, &[index]);
        cmos.read(1, &mut data);
        data[0]
    }

    #[test]
    fn date_conversion_matches_known_dates() {
        let cases = [
            (0, (1970, 1, 1, 5)),
            (951_782_400, (2000, 2, 29, 3)),
            (FIXED_NOW, (2026, 12, 4, 6)),
        ];
        for (seconds, (year, month, day, day_of_week)) in cases {
            let date = DateTime::from_unix(seconds);
            assert_eq!(
                (date.year, date.month, date.day, date.day_of_week),
                (year, month, day, day_of_week),
                "case {seconds}"
            );
            assert_eq!(date.to_unix(), seconds, "round trip of {seconds}");
        }
    }

    #[test]
    fn time_registers_read_host_time_in_bcd() {
        let mut cmos = Cmos::with_clock(NvramMemory::default(), fixed_clock);
        assert_eq!(read(&mut cmos, REG_SECONDS), 0x15);
        assert_eq!(read(&mut cmos, REG_MINUTES), 0x30);
        assert_eq!(read(&mut cmos, REG_HOURS), 0x21);
        assert_eq!(read(&mut cmos, REG_DAY_OF_MONTH), 0x04);
        assert_eq!(read(&mut cmos, REG_MONTH), 0x12);
        assert_eq!(read(&mut cmos, REG_YEAR), 0x26);
        assert_eq!(read(&mut cmos, REG_CENTURY), 0x20);
        assert_eq!(read(&mut cmos, REG_DAY_OF_WEEK), 0x06);
    }

    #[test]
    fn update_in_progress_is_never_set() {
        let mut cmos = Cmos::with_clock(NvramMemory::default(), fixed_clock);
        assert_eq!(read(&mut cmos, REG_A) & 0x80, 0);
    }

    #[test]
    fn binary_mode_reads_binary_values() {
        let mut cmos = Cmos::with_clock(NvramMemory::default(), fixed_clock);
        cmos.write(0, &[REG_B]);
        cmos.write(1, &[REG_B_24_HOUR | REG_B_BINARY]);
        assert_eq!(read(&mut cmos, REG_HOURS), 21);
    }

    #[test]
    fn writing_year_moves_clock() {
        let mut cmos = Cmos::with_clock(NvramMemory::default(), fixed_clock);
        cmos.write(0, &[REG_YEAR]);
        cmos.write(1, &[0x27]);
        assert_eq!(read(&mut cmos, REG_YEAR), 0x27);
        assert_eq!(read(&mut cmos, REG_MONTH), 0x12);
    }

    #[test]
    fn nvram_holds_memory_sizes() {
        let memory = NvramMemory {
            low_bytes: 512 << 20,
            high_bytes: 1 << 30,
            vcpus: 2,
        };
        let mut cmos = Cmos::with_clock(memory, fixed_clock);
        // (512 MiB - 16 MiB) / 64 KiB = 0x1f00.
        assert_eq!(read(&mut cmos, 0x34), 0x00);
        assert_eq!(read(&mut cmos, 0x35), 0x1f);
        // 1 GiB / 64 KiB = 0x4000.
        assert_eq!(read(&mut cmos, 0x5c), 0x40);
        assert_eq!(read(&mut cmos, 0x5f), 1);
    }
}

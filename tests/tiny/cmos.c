/* Reads the CMOS clock and prints it as seconds since the epoch, so the
 * host can compare it with its own clock. */
#include "tiny.h"

static u8 cmos_read(u8 index)
{
	outb(0x70, index);
	return inb(0x71);
}

static u64 bcd(u8 value) { return (value >> 4) * 10 + (value & 0xf); }

/* Days from 1970-01-01 to year-month-day (proleptic Gregorian). */
static u64 days_from_civil(u64 year, u64 month, u64 day)
{
	u64 era, year_of_era, day_of_year, day_of_era;
	year -= month <= 2;
	era = year / 400;
	year_of_era = year - era * 400;
	day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
	day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
	return era * 146097 + day_of_era - 719468;
}

static void put_decimal(u64 value)
{
	char digits[24];
	int i = 0;
	do {
		digits[i++] = '0' + value % 10;
		value /= 10;
	} while (value);
	while (i--)
		tiny_putc(digits[i]);
}

void tiny_main(u64 zero_page)
{
	u64 year, seconds;
	(void)zero_page;
	tiny_check("uip-clear", cmos_read(0x0a) & 0x80, 0);
	tiny_check("24-hour-bcd", cmos_read(0x0b) & 0x06, 0x02);
	tiny_check("valid-ram", cmos_read(0x0d), 0x80);
	year = bcd(cmos_read(0x32)) * 100 + bcd(cmos_read(0x09));
	seconds = days_from_civil(year, bcd(cmos_read(0x08)), bcd(cmos_read(0x07))) * 86400 +
		  bcd(cmos_read(0x04)) * 3600 + bcd(cmos_read(0x02)) * 60 + bcd(cmos_read(0x00));
	tiny_puts("rtc ");
	put_decimal(seconds);
	tiny_putc('\n');
	tiny_poweroff();
}

/* Checks the COM1 8250 registers a driver probes: line status, scratch,
 * interrupt enable, and the divisor latch behind LCR.DLAB. */
#include "tiny.h"

void tiny_main(u64 zero_page)
{
	(void)zero_page;
	/* Transmitter holding register and shift register empty. */
	tiny_check("lsr-idle", inb(COM1 + 5) & 0x60, 0x60);
	outb(COM1 + 7, 0x5a);
	tiny_check("scratch", inb(COM1 + 7), 0x5a);
	u8 divisor, iir_first, iir_second;

	outb(COM1 + 1, 0x02);
	iir_first = inb(COM1 + 2);
	iir_second = inb(COM1 + 2);
	outb(COM1 + 1, 0x00);
	tiny_check("ier", inb(COM1 + 1), 0x00);
	/* Enabling the THR-empty interrupt raises it; reading IIR clears it. */
	tiny_check("iir-thr-empty", iir_first & 0x0f, 0x02);
	tiny_check("iir-cleared", iir_second & 0x0f, 0x01);
	/* Nothing can be printed while DLAB is set: the data port is the
	 * divisor latch then. */
	outb(COM1 + 3, 0x80);
	outb(COM1 + 0, 0x0c);
	divisor = inb(COM1 + 0);
	outb(COM1 + 3, 0x03);
	tiny_check("divisor-low", divisor, 0x0c);
	tiny_check("lcr", inb(COM1 + 3), 0x03);
	tiny_poweroff();
}

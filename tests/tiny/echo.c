/* Echoes console input back in upper case until it reads 'q', then powers
 * off: a test of the path from the host's pty to the guest's UART. */
#include "tiny.h"

void tiny_main(u64 zero_page)
{
	(void)zero_page;
	tiny_puts("ready\n");
	for (;;) {
		u8 c;
		/* LSR bit 0: data ready. */
		while (!(inb(COM1 + 5) & 1))
			__asm__ volatile("pause");
		c = inb(COM1);
		if (c == 'q')
			break;
		if (c >= 'a' && c <= 'z')
			c -= 'a' - 'A';
		tiny_putc((char)c);
	}
	tiny_puts("\nbye\n");
	tiny_poweroff();
}

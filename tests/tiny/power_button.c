/* Enables ACPI power button events, says "armed", waits for a press by
 * polling PM1_STS, and then powers off as an ACPI OS would. */
#include "tiny.h"

#define PM1_STS 0x600
#define PM1_EN 0x602
#define PWRBTN (1 << 8)

void tiny_main(u64 zero_page)
{
	(void)zero_page;
	outw(PM1_EN, PWRBTN);
	tiny_puts("armed\n");
	while (!(inw(PM1_STS) & PWRBTN))
		__asm__ volatile("pause");
	outw(PM1_STS, PWRBTN);
	tiny_puts("button\n");
	tiny_poweroff();
}

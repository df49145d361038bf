/* Resets the VM the way the kernel command line asks: "kbd" through the
 * i8042 command port, "acpi" through the reset register at 0xcf9,
 * "triple" with a fault while the IDT is empty. */
#include "tiny.h"

static int has_word(const char *cmdline, const char *word)
{
	while (*cmdline) {
		const char *a = cmdline, *b = word;
		while (*b && *a == *b) {
			a++;
			b++;
		}
		if (!*b && (*a == ' ' || *a == 0))
			return 1;
		while (*cmdline && *cmdline != ' ')
			cmdline++;
		while (*cmdline == ' ')
			cmdline++;
	}
	return 0;
}

void tiny_main(u64 zero_page)
{
	const char *cmdline = (const char *)(u64)*(const u32 *)(zero_page + 0x228);
	static const struct {
		u16 limit;
		u64 base;
	} __attribute__((packed)) empty_idt = { 0, 0 };

	tiny_puts("resetting\n");
	if (has_word(cmdline, "kbd"))
		outb(0x64, 0xfe);
	if (has_word(cmdline, "acpi"))
		outb(0xcf9, 0x06);
	if (has_word(cmdline, "triple")) {
		/* A page fault at 8 GiB, beyond the boot identity mapping, with
		 * no IDT to deliver it: #PF, #DF, then shutdown. */
		__asm__ volatile("lidt %0; movq 0x200000000, %%rax" : : "m"(empty_idt) : "rax");
	}
	tiny_puts("FAIL still running\n");
	tiny_poweroff();
}

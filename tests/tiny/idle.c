/* Prints "idle" and halts with interrupts disabled forever: a guest that
 * never reacts to anything, to test stopping one. */
#include "tiny.h"

void tiny_main(u64 zero_page)
{
	(void)zero_page;
	tiny_puts("idle\n");
	for (;;)
		__asm__ volatile("cli; hlt");
}

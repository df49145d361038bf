/* Checks that addresses no device claims behave like open bus: reads
 * return all ones and writes are dropped, and the VM keeps running. */
#include "tiny.h"

void tiny_main(u64 zero_page)
{
	(void)zero_page;
	tiny_check("port-read-32", inl(0x1234), 0xffffffff);
	tiny_check("port-read-8", inb(0x2f8), 0xff);
	outl(0x1234, 0xdeadbeef);
	tiny_check("port-after-write", inl(0x1234), 0xffffffff);
	/* Inside the PCI window but in no BAR. */
	tiny_check("mmio-window-hole", mmio_read32(0xd0000000), 0xffffffff);
	/* Outside every device and outside RAM. */
	tiny_check("mmio-unmapped", mmio_read32(0xfed00000), 0xffffffff);
	mmio_write32(0xfed00000, 1);
	tiny_check("mmio-after-write", mmio_read32(0xfed00000), 0xffffffff);
	outb(0x80, 0x42);
	tiny_check("post-port-read", inb(0x80), 0);
	tiny_poweroff();
}

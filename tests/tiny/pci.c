/* Walks PCI configuration space through ports 0xcf8/0xcfc: the host
 * bridge, the virtio-rng function with its BAR and capability list, and
 * an empty slot. */
#include "tiny.h"

static u32 config_read(u32 slot, u32 offset)
{
	outl(0xcf8, 0x80000000 | slot << 11 | (offset & 0xfc));
	return inl(0xcfc);
}

static void config_write(u32 slot, u32 offset, u32 value)
{
	outl(0xcf8, 0x80000000 | slot << 11 | (offset & 0xfc));
	outl(0xcfc, value);
}

void tiny_main(u64 zero_page)
{
	u32 cap, types = 0, msix_control = 0;
	int count = 0;
	(void)zero_page;

	tiny_check("bridge-id", config_read(0, 0x00), 0x0d578086);
	tiny_check("bridge-class", config_read(0, 0x08) >> 8, 0x060000);
	tiny_check("rng-id", config_read(1, 0x00), 0x10441af4);
	tiny_check("rng-revision", config_read(1, 0x08) & 0xff, 1);
	tiny_check("rng-subsystem", config_read(1, 0x2c), 0x00401af4);
	tiny_check("rng-capability-list", (config_read(1, 0x04) >> 16) & 0x10, 0x10);
	tiny_check("rng-bar0", config_read(1, 0x10), 0xc0000000);
	config_write(1, 0x10, 0xffffffff);
	tiny_check("rng-bar0-size", config_read(1, 0x10), 0xffffc000);
	config_write(1, 0x10, 0xc0000000);
	tiny_check("rng-bar0-restored", config_read(1, 0x10), 0xc0000000);
	tiny_check("empty-slot", config_read(7, 0x00), 0xffffffff);

	/* Collect the virtio capability types (one bit each) and MSI-X. */
	cap = config_read(1, 0x34) & 0xff;
	while (cap && count++ < 16) {
		u32 header = config_read(1, cap);
		if ((header & 0xff) == 0x09)
			types |= 1u << ((header >> 24) & 0xff);
		if ((header & 0xff) == 0x11)
			msix_control = header >> 16;
		cap = (header >> 8) & 0xff;
	}
	/* common (1), notify (2), ISR (3), device (4), PCI config (5). */
	tiny_check("virtio-capabilities", types, 0x3e);
	/* Two vectors: the queue and configuration changes. */
	tiny_check("msix-table-size", msix_control & 0x7ff, 1);
	tiny_poweroff();
}

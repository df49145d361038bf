/* Checks the state the engine hands a kernel at the 64-bit entry: long
 * mode, flat segments with the boot selectors, the zero page with its
 * signature, command line and e820 map, and the ACPI RSDP. */
#include "tiny.h"

struct e820_entry {
	u64 addr;
	u64 size;
	u32 type;
} __attribute__((packed));

static u64 read_cr0(void) { u64 v; __asm__ volatile("mov %%cr0, %0" : "=r"(v)); return v; }
static u64 read_cr4(void) { u64 v; __asm__ volatile("mov %%cr4, %0" : "=r"(v)); return v; }
static u16 read_cs(void) { u16 v; __asm__ volatile("mov %%cs, %0" : "=r"(v)); return v; }
static u16 read_ds(void) { u16 v; __asm__ volatile("mov %%ds, %0" : "=r"(v)); return v; }

static u64 rdmsr(u32 index)
{
	u32 low, high;
	__asm__ volatile("rdmsr" : "=a"(low), "=d"(high) : "c"(index));
	return ((u64)high << 32) | low;
}

static int string_equal(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}

void tiny_main(u64 zero_page)
{
	const u8 *zp = (const u8 *)zero_page;
	const struct e820_entry *e820 = (const struct e820_entry *)(zp + 0x2d0);
	u8 entries = zp[0x1e8];
	u64 ram = 0;
	int i;

	tiny_check("cr0-pe-pg", read_cr0() & 0x80000001, 0x80000001);
	tiny_check("cr4-pae", read_cr4() & 0x20, 0x20);
	tiny_check("efer-lma", rdmsr(0xc0000080) & 0x500, 0x500);
	tiny_check("cs-boot-selector", read_cs(), 0x10);
	tiny_check("ds-boot-selector", read_ds(), 0x18);
	tiny_check("zero-page", zero_page, 0x7000);
	tiny_check("hdrs-signature", *(const u32 *)(zp + 0x202), 0x53726448);
	tiny_check("boot-flag", *(const u16 *)(zp + 0x1fe), 0xaa55);
	tiny_check("loader-type", zp[0x210], 0xff);
	tiny_check("cmdline", string_equal((const char *)(u64)*(const u32 *)(zp + 0x228), "tiny boot_state"), 1);
	tiny_check("e820-entries", entries, 4);
	for (i = 0; i < entries; i++)
		if (e820[i].type == 1)
			ram += e820[i].size;
	/* 32 MiB minus the 384 KiB between the EBDA and 1 MiB. */
	tiny_check("e820-ram", ram, (32 << 20) - 0x60400);
	tiny_check("e820-high-start", e820[3].addr, 0x100000);
	tiny_check("rsdp-address", *(const u64 *)(zp + 0x70), 0xe0000);
	tiny_check("rsdp-signature", *(const u64 *)0xe0000, 0x2052545020445352UL);
	tiny_poweroff();
}

/*
 * Runtime for tiny guest programs: freestanding x86_64 code that the VM
 * engine boots through the Linux 64-bit entry (ELF, RSI = zero page).
 * A program reports through COM1 with "ok NAME" / "FAIL NAME ..." lines
 * and ends with tiny_poweroff(). Every port access is a VM exit, which on
 * an emulating host costs microseconds, so programs stay small.
 */
#ifndef TINY_H
#define TINY_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

static inline void outb(u16 port, u8 value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }
static inline void outw(u16 port, u16 value) { __asm__ volatile("outw %0, %1" : : "a"(value), "Nd"(port)); }
static inline void outl(u16 port, u32 value) { __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 mmio_read32(u64 address) { return *(volatile u32 *)address; }
static inline void mmio_write32(u64 address, u32 value) { *(volatile u32 *)address = value; }
static inline u8 mmio_read8(u64 address) { return *(volatile u8 *)address; }
static inline void mmio_write8(u64 address, u8 value) { *(volatile u8 *)address = value; }
static inline u16 mmio_read16(u64 address) { return *(volatile u16 *)address; }
static inline void mmio_write16(u64 address, u16 value) { *(volatile u16 *)address = value; }
static inline void mmio_write64(u64 address, u64 value) { *(volatile u64 *)address = value; }

#define COM1 0x3f8

/* The engine's UART takes a byte at once, so no LSR polling is needed. */
static __attribute__((unused)) void tiny_putc(char c) { outb(COM1, (u8)c); }

static __attribute__((unused)) void tiny_puts(const char *s) { while (*s) tiny_putc(*s++); }

static __attribute__((unused)) void tiny_puthex(u64 value)
{
	const char *digits = "0123456789abcdef";
	int shift = 60;
	tiny_puts("0x");
	while (shift > 0 && ((value >> shift) & 0xf) == 0)
		shift -= 4;
	for (; shift >= 0; shift -= 4)
		tiny_putc(digits[(value >> shift) & 0xf]);
}

/* Prints "ok NAME" or "FAIL NAME got X want Y". */
static __attribute__((unused)) void tiny_check(const char *name, u64 got, u64 want)
{
	if (got == want) {
		tiny_puts("ok ");
		tiny_puts(name);
	} else {
		tiny_puts("FAIL ");
		tiny_puts(name);
		tiny_puts(" got ");
		tiny_puthex(got);
		tiny_puts(" want ");
		tiny_puthex(want);
	}
	tiny_putc('\n');
}

/* ACPI S5: SLP_TYP 5 with SLP_EN written to PM1a_CNT (port 0x604). */
static __attribute__((unused)) void tiny_poweroff(void)
{
	outw(0x604, (5 << 10) | (1 << 13));
	for (;;)
		__asm__ volatile("cli; hlt");
}

void tiny_main(u64 zero_page);

#endif

/* Drives the virtio-rng device through the modern PCI transport the way
 * a driver does, polling the used ring instead of taking interrupts, and
 * checks that hostile requests do not stop the device. */
#include "tiny.h"

#define BAR0 0xc0000000UL
#define COMMON(offset) (BAR0 + (offset))
#define NOTIFY (BAR0 + 0x2000)
#define QUEUE_SIZE 8
#define DESC 0x200000UL
#define AVAIL 0x201000UL
#define USED 0x202000UL
#define BUFFER 0x300000UL
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2

struct desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
} __attribute__((packed));

static volatile struct desc *const descs = (volatile struct desc *)DESC;
static volatile u16 *const avail = (volatile u16 *)AVAIL;
static volatile u16 *const used_idx = (volatile u16 *)(USED + 2);
static volatile u32 *const used_ring = (volatile u32 *)(USED + 4);
static u16 next_avail;
static u16 completed;

static void config_write(u32 slot, u32 offset, u32 value)
{
	outl(0xcf8, 0x80000000 | slot << 11 | (offset & 0xfc));
	outl(0xcfc, value);
}

/* Offers descriptor `head` and waits until the device used it; returns
 * the used length, or 0xffffffff when the device did not answer. */
static u32 submit(u16 head)
{
	u32 spins;
	avail[2 + next_avail % QUEUE_SIZE] = head;
	__asm__ volatile("mfence" ::: "memory");
	avail[1] = ++next_avail;
	__asm__ volatile("mfence" ::: "memory");
	mmio_write16(NOTIFY, 0);
	for (spins = 0; spins < 2000000; spins++)
		if (*used_idx == (u16)(completed + 1)) {
			completed++;
			return used_ring[((completed - 1) % QUEUE_SIZE) * 2 + 1];
		}
	return 0xffffffff;
}

static u64 buffer_nonzero(u32 len)
{
	volatile u8 *bytes = (volatile u8 *)BUFFER;
	u32 i;
	for (i = 0; i < len; i++)
		if (bytes[i])
			return 1;
	return 0;
}

void tiny_main(u64 zero_page)
{
	(void)zero_page;
	/* Memory decoding and bus mastering on. */
	config_write(1, 0x04, 0x6);

	mmio_write8(COMMON(0x14), 0);
	mmio_write8(COMMON(0x14), 1 | 2);
	mmio_write32(COMMON(0x00), 1);
	tiny_check("feature-version-1", mmio_read32(COMMON(0x04)) & 1, 1);
	mmio_write32(COMMON(0x08), 1);
	mmio_write32(COMMON(0x0c), 1);
	mmio_write32(COMMON(0x08), 0);
	mmio_write32(COMMON(0x0c), 0);
	mmio_write8(COMMON(0x14), 1 | 2 | 8);
	tiny_check("features-ok", mmio_read8(COMMON(0x14)) & 8, 8);
	tiny_check("num-queues", mmio_read16(COMMON(0x12)), 1);

	mmio_write16(COMMON(0x16), 0);
	tiny_check("queue-max-size", mmio_read16(COMMON(0x18)), 256);
	mmio_write16(COMMON(0x18), QUEUE_SIZE);
	mmio_write64(COMMON(0x20), DESC);
	mmio_write64(COMMON(0x28), AVAIL);
	mmio_write64(COMMON(0x30), USED);
	mmio_write16(COMMON(0x1c), 1);
	mmio_write8(COMMON(0x14), 1 | 2 | 8 | 4);
	tiny_check("driver-ok", mmio_read8(COMMON(0x14)), 1 | 2 | 8 | 4);

	descs[0].addr = BUFFER;
	descs[0].len = 16;
	descs[0].flags = VIRTQ_DESC_F_WRITE;
	tiny_check("request-filled", submit(0), 16);
	tiny_check("random-bytes", buffer_nonzero(16), 1);

	/* A buffer outside guest memory: nothing is written, the request
	 * still completes. */
	descs[1].addr = 0xf0000000UL;
	descs[1].len = 64;
	descs[1].flags = VIRTQ_DESC_F_WRITE;
	tiny_check("bad-address-completes", submit(1), 0);

	/* A descriptor chain that loops on itself. */
	descs[2].addr = BUFFER;
	descs[2].len = 4;
	descs[2].flags = VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT;
	descs[2].next = 2;
	tiny_check("looping-chain-completes", submit(2) != 0xffffffff, 1);

	/* A head index beyond the queue size: dropped, never used. */
	avail[2 + next_avail % QUEUE_SIZE] = 200;
	__asm__ volatile("mfence" ::: "memory");
	avail[1] = ++next_avail;
	mmio_write16(NOTIFY, 0);

	/* The device still serves good requests afterwards. */
	tiny_check("still-working", submit(0), 16);
	tiny_poweroff();
}

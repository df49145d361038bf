/*
 * kvm-smoke: check that /dev/kvm runs guest code, using only the KVM API.
 *
 * It creates a VM with 64 KiB of memory and one vCPU in real mode, runs
 * code that writes "KVM OK\n" to port 0x3f8 one byte at a time, then
 * writes port 0x80 EXITS times and halts. The output is:
 *
 *   kvm-smoke: guest wrote: KVM OK
 *   kvm-smoke: guest halted after 1000 exits to port 0x80
 *   kvm-smoke: N us per exit to user space
 *
 * The first two lines are exact; N varies. Exit status 0 on success, 1 on
 * any failure, with the failed call on stderr.
 *
 * Build: gcc -O2 -static -o kvm-smoke kvm-smoke.c
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

#define MEMORY_SIZE 0x10000
#define CODE_ADDRESS 0x1000
#define EXITS 1000

static const unsigned char guest_code[] = {
	0xba, 0xf8, 0x03,       /* mov dx, 0x3f8 */
	0xb0, 'K', 0xee,        /* mov al, 'K'; out dx, al */
	0xb0, 'V', 0xee,
	0xb0, 'M', 0xee,
	0xb0, ' ', 0xee,
	0xb0, 'O', 0xee,
	0xb0, 'K', 0xee,
	0xb0, '\n', 0xee,
	0xba, 0x80, 0x00,       /* mov dx, 0x80 */
	0xb9, EXITS & 0xff, EXITS >> 8, /* mov cx, EXITS */
	0xee,                   /* loop: out dx, al */
	0x49,                   /* dec cx */
	0x75, 0xfc,             /* jnz loop */
	0xf4,                   /* hlt */
};

static int check(int result, const char *operation)
{
	if (result < 0) {
		fprintf(stderr, "kvm-smoke: %s: %s\n", operation, strerror(errno));
		exit(1);
	}
	return result;
}

static double now_seconds(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void)
{
	int kvm = check(open("/dev/kvm", O_RDWR | O_CLOEXEC), "open /dev/kvm");
	int vm = check(ioctl(kvm, KVM_CREATE_VM, 0), "KVM_CREATE_VM");

	unsigned char *memory = mmap(NULL, MEMORY_SIZE, PROT_READ | PROT_WRITE,
				     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (memory == MAP_FAILED)
		check(-1, "mmap guest memory");
	memcpy(memory + CODE_ADDRESS, guest_code, sizeof(guest_code));
	struct kvm_userspace_memory_region region = {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = MEMORY_SIZE,
		.userspace_addr = (unsigned long)memory,
	};
	check(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region), "KVM_SET_USER_MEMORY_REGION");

	int vcpu = check(ioctl(vm, KVM_CREATE_VCPU, 0), "KVM_CREATE_VCPU");
	int run_size = check(ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), "KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		check(-1, "mmap kvm_run");

	/* Real mode with CS base 0, starting at CODE_ADDRESS. */
	struct kvm_sregs sregs;
	check(ioctl(vcpu, KVM_GET_SREGS, &sregs), "KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	check(ioctl(vcpu, KVM_SET_SREGS, &sregs), "KVM_SET_SREGS");
	struct kvm_regs regs = { .rip = CODE_ADDRESS, .rflags = 0x2 };
	check(ioctl(vcpu, KVM_SET_REGS, &regs), "KVM_SET_REGS");

	char line[64];
	size_t line_length = 0;
	int port_80_exits = 0;
	double first_exit = 0;
	for (;;) {
		check(ioctl(vcpu, KVM_RUN, 0), "KVM_RUN");
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x3f8 &&
		    run->io.direction == KVM_EXIT_IO_OUT && line_length < sizeof(line) - 1) {
			line[line_length++] = *((char *)run + run->io.data_offset);
		} else if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0x80) {
			if (port_80_exits++ == 0)
				first_exit = now_seconds();
		} else if (run->exit_reason == KVM_EXIT_HLT) {
			break;
		} else {
			fprintf(stderr, "kvm-smoke: unexpected exit reason %u\n", run->exit_reason);
			return 1;
		}
	}
	double elapsed = now_seconds() - first_exit;

	line[line_length] = '\0';
	printf("kvm-smoke: guest wrote: %s", line);
	printf("kvm-smoke: guest halted after %d exits to port 0x80\n", port_80_exits);
	if (port_80_exits > 1)
		printf("kvm-smoke: %.0f us per exit to user space\n",
		       elapsed / (port_80_exits - 1) * 1e6);
	return 0;
}

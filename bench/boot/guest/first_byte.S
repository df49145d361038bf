/*
 * The "first instruction" guest of the boot benchmark. Its first
 * instructions write one byte ('!') to COM1 and then it halts for good, so
 * the time from starting a VMM to that byte on the console is the time to
 * the guest's first instruction plus one port write.
 *
 * It has two entry points, one for each boot protocol the measured VMMs
 * speak:
 *   _start     the ELF entry, in 64-bit mode: the Linux 64-bit boot
 *              protocol that vmd's engine uses for an ELF kernel
 *   pvh_start  the PVH entry (the XEN_ELFNOTE_PHYS32_ENTRY note), in
 *              32-bit protected mode without paging: what QEMU's -kernel
 *              jumps to for an ELF kernel, on both -M pc and -M microvm
 * Interrupts stay off and HLT is repeated, so the VM stays up for the
 * benchmark to read its memory figures and then kill it.
 */
	.section .text.start, "ax"

	.globl _start
	.code64
_start:
	mov	$0x3f8, %dx
	mov	$'!', %al
	out	%al, %dx
1:	cli
	hlt
	jmp	1b

	.globl pvh_start
	.code32
pvh_start:
	mov	$0x3f8, %dx
	mov	$'!', %al
	out	%al, %dx
2:	cli
	hlt
	jmp	2b

/* The ELF note that tells a PVH loader the 32-bit entry. QEMU reads its
 * descriptor as a 64-bit address, as in Linux's vmlinux. */
	.section .note.Xen, "a", @note
	.balign	4
	.long	4		/* name size: "Xen" and its NUL */
	.long	8		/* descriptor size */
	.long	18		/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz	"Xen"
	.balign	4
	.quad	pvh_start
	.balign	4

	.section .note.GNU-stack, "", @progbits

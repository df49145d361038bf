/* Entry of a tiny guest: the engine starts here in 64-bit mode with RSI
 * holding the zero page address (Linux 64-bit boot protocol). */
	.section .text.start, "ax"
	.globl _start
	.code64
_start:
	lea	stack_top(%rip), %rsp
	mov	%rsi, %rdi
	call	tiny_main
	/* Power off if the program returns. */
	mov	$0x604, %dx
	mov	$0x3400, %ax
	out	%ax, %dx
1:	cli
	hlt
	jmp	1b

	.section .bss
	.balign 16
	.space	16384
stack_top:

	.section .note.GNU-stack, "", @progbits

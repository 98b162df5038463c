/* Counts forever: rbx += 1, stored to VARS after every step, with a per-vCPU slot
 * (VARS + 8 * APIC ID would need the LAPIC; one vCPU is enough here). The count lives in a
 * register, so after a restore it continues only if the vCPU's registers came back too. */
.include "lib.inc"
.text
.globl _start
_start:
    xor %ebx, %ebx
1:
    inc %rbx
    mov %rbx, VARS
    jmp 1b

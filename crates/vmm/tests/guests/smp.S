/* (d) SMP: every vCPU runs this (ApStart::SameEntry, all on the boot stack, so no stack use).
 * Each reports LAPIC ID | CPUID.1:EBX[31:24] << 16, counts itself in, and tells the exit port. */
.include "lib.inc"
.set ARRIVED, VARS
.text
.globl _start
_start:
    map_high
    mov $1, %eax
    cpuid
    shr $24, %ebx
    mov %ebx, %edi
    shl $16, %edi
    mov $LAPIC, %ebx
    mov 0x20(%rbx), %esi
    shr $24, %esi
    or %esi, %edi
    lock incl ARRIVED
    report 0, %edi
    exit_vm

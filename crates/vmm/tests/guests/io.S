/* (a) Port I/O and MMIO: read a value from the report port device and one from the MMIO test
 * device, add them, write the sum back to both; then read an unmapped port (4 and 1 bytes)
 * and unmapped MMIO, and report what came back (all-ones expected). */
.include "lib.inc"
.text
.globl _start
_start:
    map_high
    mov $(REPORT + 4), %dx
    in %dx, %eax                /* port device: REPORT_ANSWER + 4 */
    mov %eax, %esi
    mov $MMIO_DEV, %ebx
    mov 0x10(%rbx), %ecx        /* MMIO device: MMIO_ANSWER + 0x10 */
    add %ecx, %esi
    report 0, %esi
    mov %esi, 0x20(%rbx)        /* 4-byte MMIO write */
    lea (%rsi, %rsi), %rax
    mov %rax, 0x28(%rbx)        /* 8-byte MMIO write: twice the sum */

    mov $0x2f0, %dx             /* no device there */
    in %dx, %eax
    mov %eax, %edi
    report 1, %edi
    mov $0x2f0, %dx
    in %dx, %al
    movzbl %al, %edi
    report 2, %edi
    mov $(MMIO_DEV + 0x100000), %ebx   /* no device there either */
    mov (%rbx), %edi
    report 3, %edi
    exit_vm

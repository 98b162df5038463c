/* (g) xsave from ring 0 at a known RIP (0x100040): an instruction a PVM host's emulator cannot
 * run and hearth cannot complete, so the VM must stop with RIP and bytes in the message. */
.include "lib.inc"
.text
.globl _start
_start:
    report 0, $0x5a5e
    mov $(VARS + 0x1000), %edi
    xor %eax, %eax
    xor %edx, %edx
    .org 0x40, 0x90
    xsave (%rdi)
    report 1, $0xbad
    exit_vm

/* (e) Load an empty IDT and raise #UD: #UD → #GP → #DF → triple fault. */
.include "lib.inc"
.text
.globl _start
_start:
    report 0, $0x7e57
    movw $0, IDT_PTR
    movq $0, IDT_PTR + 2
    lidt IDT_PTR
    ud2
    report 1, $0xbad
    exit_vm

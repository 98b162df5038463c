/* (f) Instructions a PVM host's ring-0 emulator gives up on and hearth completes: int3 with a
 * #BP handler, `int $0x41`, popcnt (result and ZF), fwait. On VMX/SVM they simply execute. */
.include "lib.inc"
.set BP_COUNT, VARS
.set BP_RIP, VARS + 8
.set INT41_COUNT, VARS + 16
.text
.globl _start
_start:
    set_gate 3, bp_handler
    set_gate 0x41, int41_handler
    load_idt
    int3
after_int3:
    report 0, BP_COUNT
    report 1, BP_RIP
    report 2, $after_int3
    int $0x41
    report 3, INT41_COUNT
    movabs $0xf0f0123456780001, %rcx
    popcnt %rcx, %rbx
    report 4, %ebx
    xor %ecx, %ecx
    mov $77, %ebx
    popcnt %rcx, %rbx           /* zero input: result 0, ZF set */
    setz %cl
    shl $8, %ecx
    or %ecx, %ebx
    report 5, %ebx
    fwait
    report 6, $0xf00d
    exit_vm

bp_handler:
    push %rax
    incl BP_COUNT
    mov 8(%rsp), %rax           /* frame RIP: the instruction after int3 */
    mov %rax, BP_RIP
    pop %rax
    iretq
int41_handler:
    incl INT41_COUNT
    iretq

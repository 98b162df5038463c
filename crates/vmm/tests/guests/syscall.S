/* (c) A tiny kernel with a ring-3 program that makes system calls.
 *
 * Kernel: own GDT (kernel code 0x08 / data 0x10, user data 0x1b / code 0x23, TSS 0x28 with
 * RSP0), IDT (#BP 3 with DPL 3, #UD 6, #GP 13, #PF 14), EFER.SCE, STAR/LSTAR/SFMASK, and one
 * user 2 MiB page (U bit) at 0x400000 holding a copy of the user program.
 *
 * System calls (rax = number, rdi/rsi = arguments, result in rax; rcx/r11 clobbered):
 *   0 report(x): out x to report port 0      1 add(a, b) = a + b
 *   2 exit: out the kernel's counters (ports 1..7), end the VM
 * They arrive by either path, depending on the host:
 *   - LSTAR entry at CPL 0 (VMX/SVM KVM), returning with sysretq;
 *   - a PVM host runs `syscall` to LSTAR but stays at CPL 3, so the guest takes a user #PF with
 *     CR2 == frame RIP == LSTAR and error code 0x15 (present | user | fetch; 0x05 without
 *     EFER.NXE, as here); with `0f 05` just
 *     before RCX that is the system call, and it returns to RCX with iretq.
 * Every handler checks that the interrupted code ran at CPL 3 (frame CS RPL); anything
 * unexpected is reported on port 15 and ends the VM. */
.include "lib.inc"
.set USER_BASE, 0x400000
.set USER_STACK, 0x5ff000
.set N_LSTAR, VARS
.set N_PVM, VARS + 8
.set N_BP, VARS + 16
.set N_GP, VARS + 24
.set N_UD, VARS + 32
.set N_RPL3, VARS + 40
.set N_CPL0_ENTRY, VARS + 48
.set USER_RSP, VARS + 56

.macro fail code
    report 15, $\code
    exit_vm
.endm

.text
.globl _start
_start:
    lgdt gdt_ptr
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    pushq $0x08
    pushq $1f
    lretq
1:
    mov $KSTACK, %esp
    movq $KSTACK, TSS_ADDR + 4          /* RSP0 */
    movw $0x68, TSS_ADDR + 0x66         /* I/O bitmap beyond the limit: no port access at CPL 3 */
    mov $0x28, %ax
    ltr %ax

    set_gate 3, bp_handler, 0xee
    set_gate 6, ud_handler
    set_gate 13, gp_handler
    set_gate 14, pf_handler
    load_idt

    mov $0xc0000080, %ecx               /* EFER.SCE */
    rdmsr
    or $1, %eax
    wrmsr
    mov $0xc0000081, %ecx               /* STAR: syscall CS 0x08; sysret base 0x10 -> CS 0x23, SS 0x1b */
    xor %eax, %eax
    mov $0x00100008, %edx
    wrmsr
    mov $0xc0000082, %ecx               /* LSTAR */
    mov $syscall_entry, %eax
    xor %edx, %edx
    wrmsr
    mov $0xc0000084, %ecx               /* SFMASK: clear IF, TF, DF */
    mov $0x700, %eax
    wrmsr

    orq $4, BOOT_PML4                   /* user-accessible path to the user page only */
    orq $4, BOOT_PDPT
    movq $(USER_BASE | 0x87), BOOT_PD + 8 * (USER_BASE >> 21)
    mov %cr3, %rax
    mov %rax, %cr3
    mov $user_code, %esi
    mov $USER_BASE, %edi
    mov $(user_end - user_code), %ecx
    cld
    rep movsb

    pushq $0x1b                         /* SS */
    pushq $USER_STACK                   /* RSP */
    pushq $0x2                          /* RFLAGS */
    pushq $0x23                         /* CS */
    pushq $USER_BASE                    /* RIP */
    iretq

/* Path 1: `syscall` arrived at CPL 0. The stack is still the user's. */
syscall_entry:
    mov %rsp, USER_RSP
    mov $KSTACK, %esp
    incq N_LSTAR
    push %rax
    mov %cs, %eax
    cmp $0x08, %eax
    jne 1f
    incq N_CPL0_ENTRY
1:  pop %rax
    push %rcx
    push %r11
    call dispatch
    pop %r11
    pop %rcx
    mov USER_RSP, %rsp
    sysretq

/* rax = number, rdi/rsi = arguments -> rax; preserves everything else. */
dispatch:
    push %rdx
    cmp $0, %rax
    je sys_report
    cmp $1, %rax
    je sys_add
    cmp $2, %rax
    je sys_exit
    mov $-1, %rax
    jmp 9f
sys_report:
    report 0, %edi
    xor %eax, %eax
    jmp 9f
sys_add:
    lea (%rdi, %rsi), %rax
9:  pop %rdx
    ret
sys_exit:
    report 1, N_LSTAR
    report 2, N_PVM
    report 3, N_BP
    report 4, N_GP
    report 5, N_UD
    report 6, N_RPL3
    report 7, N_CPL0_ENTRY
    exit_vm

/* #PF: error code, RIP, CS, RFLAGS, RSP, SS. Path 2 (PVM) system calls land here. */
pf_handler:
    push %rax
    mov 8(%rsp), %rax                   /* present | user, plus fetch (0x10) only if EFER.NXE */
    and $~0x10, %rax                    /* is on (SDM vol. 3 §4.7): 0x15 under Linux, 0x05 here */
    cmp $0x05, %rax
    jne pf_bad
    testb $3, 24(%rsp)
    jz pf_bad
    mov %cr2, %rax
    cmp $syscall_entry, %rax
    jne pf_bad
    cmp 16(%rsp), %rax
    jne pf_bad
    cmpw $0x050f, -2(%rcx)              /* the `syscall` RCX returns past */
    jne pf_bad
    pop %rax
    add $8, %rsp                        /* drop the error code */
    incq N_PVM
    incq N_RPL3
    call dispatch
    mov %rcx, 0(%rsp)                   /* return where sysret would: RIP = RCX, RFLAGS = R11 */
    mov %r11, 16(%rsp)
    iretq
pf_bad:
    pop %rax
    mov %cr2, %rsi
    report 8, %esi                      /* diagnostics: CR2, error code, RIP, CS */
    report 9, (%rsp)
    report 10, 8(%rsp)
    report 11, 16(%rsp)
    fail 14

/* #BP (trap, DPL 3 gate): RIP (after int3), CS, ... */
bp_handler:
    testb $3, 8(%rsp)
    jz bp_bad
    incq N_BP
    incq N_RPL3
    iretq
bp_bad:
    fail 3

/* #GP: error code, RIP, CS, ...: expected for `out %al, $0x80` (e6 80) at CPL 3; skip it. */
gp_handler:
    push %rax
    testb $3, 24(%rsp)
    jz gp_bad
    mov 16(%rsp), %rax
    cmpb $0xe6, (%rax)
    jne gp_bad
    addq $2, 16(%rsp)
    incq N_GP
    incq N_RPL3
    pop %rax
    add $8, %rsp
    iretq
gp_bad:
    fail 13

/* #UD: RIP, CS, ...: expected for ud2 (0f 0b) at CPL 3; skip it. */
ud_handler:
    push %rax
    testb $3, 16(%rsp)
    jz ud_bad
    mov 8(%rsp), %rax
    cmpw $0x0b0f, (%rax)
    jne ud_bad
    addq $2, 8(%rsp)
    incq N_UD
    incq N_RPL3
    pop %rax
    iretq
ud_bad:
    fail 6

/* The ring-3 program: position independent, copied to USER_BASE. 17 system calls. */
user_code:
    mov %cs, %edi
    xor %eax, %eax
    syscall                             /* report(CS) */
    mov $1, %eax
    mov $40, %edi
    mov $2, %esi
    syscall                             /* add(40, 2) */
    mov %rax, %rdi
    xor %eax, %eax
    syscall                             /* report(42) */
    mov $0x5eed, %ebx                   /* must survive the system calls below */
    xor %r12d, %r12d
    mov $1, %r13d
1:  mov $1, %eax
    mov %r12, %rdi
    mov %r13, %rsi
    syscall                             /* sum = add(sum, i), i = 1..10 */
    mov %rax, %r12
    inc %r13
    cmp $10, %r13
    jbe 1b
    mov %r12, %rdi
    xor %eax, %eax
    syscall                             /* report(55) */
    mov %rbx, %rdi
    xor %eax, %eax
    syscall                             /* report(0x5eed) */
    int3
    out %al, $0x80
    ud2
    mov $0x600d, %edi
    xor %eax, %eax
    syscall                             /* report(0x600d): back after all three exceptions */
    mov $2, %eax
    syscall                             /* exit */
    jmp .
user_end:

    .balign 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff            /* 0x08 kernel code, 64-bit */
    .quad 0x00cf92000000ffff            /* 0x10 kernel data */
    .quad 0x00cff2000000ffff            /* 0x18 user data (DPL 3) */
    .quad 0x00affa000000ffff            /* 0x20 user code, 64-bit (DPL 3) */
    .word 0x67                          /* 0x28 TSS (available), 16 bytes */
    .word TSS_ADDR & 0xffff
    .byte (TSS_ADDR >> 16) & 0xff
    .byte 0x89
    .byte 0
    .byte (TSS_ADDR >> 24) & 0xff
    .long 0
    .long 0
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt

/* (d, bonus) SMP the hardware way (ApStart::WaitForSipi): the boot processor copies a real-mode
 * trampoline below 1 MiB and sends INIT and SIPI to all others through the LAPIC ICR (Intel
 * MP spec B.4). Each AP goes from real mode straight to long mode (PAE, LME, then PE|PG and a
 * far jump to a 64-bit code segment), joins the boot page tables, and reports LAPIC ID | 0x100.
 * The boot processor reports its own ID. No processor touches a stack. */
.include "lib.inc"
.set TRAMP_ADDR, 0x70000                /* SIPI vector 0x70 */
.set ARRIVED, VARS
.text
.globl _start
_start:
    map_high                            /* before the APs start: they share these page tables */
    mov $tramp, %esi
    mov $TRAMP_ADDR, %edi
    mov $(tramp_end - tramp), %ecx
    cld
    rep movsb
    mov $LAPIC, %ebx
    movl $0x1ff, 0xf0(%rbx)             /* SVR: APIC on */
    movl $0, 0x310(%rbx)                /* ICR high: destination (unused with a shorthand) */
    movl $0x000c4500, 0x300(%rbx)       /* all excluding self, level assert, INIT */
    movl $(0x000c4600 | (TRAMP_ADDR >> 12)), 0x300(%rbx)  /* SIPI */
    movl $(0x000c4600 | (TRAMP_ADDR >> 12)), 0x300(%rbx)  /* second SIPI, as the MP spec says; started APs ignore it */
    mov 0x20(%rbx), %esi
    shr $24, %esi
    report 0, %esi
    exit_vm

ap64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $LAPIC, %ebx
    mov 0x20(%rbx), %esi
    shr $24, %esi
    or $0x100, %esi
    lock incl ARRIVED
    report 0, %esi
    exit_vm

/* Runs at TRAMP_ADDR with CS = TRAMP_ADDR >> 4, IP = 0, in real mode. */
.code16
tramp:
    cli
    lgdtl %cs:(tgdtr - tramp)
    mov $0x20, %eax                     /* CR4.PAE */
    mov %eax, %cr4
    mov $BOOT_PML4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx               /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov $0x80000001, %eax               /* CR0.PG | CR0.PE: long mode is active */
    mov %eax, %cr0
    ljmpl $0x08, $ap64                  /* 64-bit code segment: leave compatibility mode */
    .balign 8
tgdt:
    .quad 0
    .quad 0x00af9a000000ffff            /* 0x08 64-bit code */
    .quad 0x00cf92000000ffff            /* 0x10 data */
tgdtr:
    .word tgdtr - tgdt - 1
    .long TRAMP_ADDR + (tgdt - tramp)
tramp_end:
.code64

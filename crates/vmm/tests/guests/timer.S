/* (b) LAPIC timer: periodic mode, vector 0x40, 1 ms period at KVM's 1 GHz APIC bus clock.
 * The handler counts ticks and EOIs; at NTICKS it masks and stops the timer. The main loop
 * halts until then, and reports the tick count, its wake-ups and the TSC delta. */
.include "lib.inc"
.set NTICKS, 20
.set TICKS, VARS
.set LATE, VARS + 8
.set WAKEUPS, VARS + 16
.set TSC0, VARS + 24
.text
.globl _start
_start:
    map_high
    set_gate 0x40, tick
    set_gate 0xff, spurious
    load_idt
    mov $LAPIC, %ebx
    movl $0x1ff, 0xf0(%rbx)             /* SVR: APIC on, spurious vector 0xff */
    movl $0x3, 0x3e0(%rbx)              /* divide configuration: by 16 */
    movl $(0x20000 | 0x40), 0x320(%rbx) /* LVT timer: periodic, vector 0x40 */
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, TSC0
    movl $62500, 0x380(%rbx)            /* initial count: 62500 * 16 ns = 1 ms */
    sti
wait:
    hlt
    incl WAKEUPS
    cmpl $NTICKS, TICKS
    jb wait
    cli
    rdtsc
    shl $32, %rdx
    or %rdx, %rax
    sub TSC0, %rax
    mov %rax, %rsi
    report 0, TICKS
    report 1, WAKEUPS
    report 2, %esi
    shr $32, %rsi
    report 3, %esi
    report 4, LATE
    exit_vm

tick:
    push %rbx
    mov $LAPIC, %ebx
    cmpl $NTICKS, TICKS
    jae late
    incl TICKS
    cmpl $NTICKS, TICKS
    jb eoi
    movl $(0x10000 | 0x40), 0x320(%rbx) /* last tick: mask the LVT entry... */
    movl $0, 0x380(%rbx)                /* ...and stop the counter */
    jmp eoi
late:
    incl LATE                           /* already pending when the timer was stopped */
eoi:
    movl $0, 0xb0(%rbx)
    pop %rbx
    iretq
spurious:
    iretq

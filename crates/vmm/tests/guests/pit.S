/* (b, PIT) The in-kernel PIT's IRQ 0 through the 8259 PIC and the LAPIC's LINT0 (ExtINT), the
 * way a PC without an IOAPIC takes its timer: PIC vector base 0x20, PIT channel 0 in mode 2
 * (rate generator) at ~1 kHz. The handler counts ticks and EOIs the PIC; after NTICKS the main
 * loop masks IRQ 0 and reports the count. */
.include "lib.inc"
.set NTICKS, 20
.set TICKS, VARS
.text
.globl _start
_start:
    map_high
    set_gate 0x20, tick
    load_idt
    mov $LAPIC, %ebx
    movl $0x1ff, 0xf0(%rbx)             /* SVR: APIC on */
    movl $0x700, 0x350(%rbx)            /* LVT0: ExtINT, unmasked */
    mov $0x11, %al                      /* PIC master: ICW1 (edge, cascade, ICW4) */
    out %al, $0x20
    mov $0x20, %al                      /* ICW2: vectors 0x20..0x27 */
    out %al, $0x21
    mov $0x04, %al                      /* ICW3: slave on IRQ 2 */
    out %al, $0x21
    mov $0x01, %al                      /* ICW4: 8086 mode */
    out %al, $0x21
    mov $0xfe, %al                      /* OCW1: only IRQ 0 */
    out %al, $0x21
    mov $0x34, %al                      /* PIT: channel 0, lobyte/hibyte, mode 2 */
    out %al, $0x43
    mov $(1193 & 0xff), %al             /* 1193182 Hz / 1193 = ~1 kHz */
    out %al, $0x40
    mov $(1193 >> 8), %al
    out %al, $0x40
    sti
wait:
    hlt
    cmpl $NTICKS, TICKS
    jb wait
    cli
    mov $0xff, %al                      /* mask every PIC line */
    out %al, $0x21
    report 0, TICKS
    exit_vm

tick:
    push %rax
    incl TICKS
    mov $0x20, %al                      /* PIC: non-specific EOI */
    out %al, $0x20
    pop %rax
    iretq

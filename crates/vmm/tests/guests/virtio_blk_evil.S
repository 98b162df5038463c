/* A malicious virtio-blk driver against hearth's real device (virtio-mmio at MMIO_DEV, 16-entry
 * queue). Each phase reports what the device showed (report numbers in virtio_blk_robustness):
 *   0,1  a descriptor chain that loops: Status (DEVICE_NEEDS_RESET expected), InterruptStatus;
 *        then every offset of the 4 KiB window read and written at widths 1, 2, 4 and 8;
 *   2    Status after a reset;
 *   3,4  a good IN request for sector 0: status byte, first data dword;
 *   5    OUT at sector = capacity (past the end): status byte;
 *   6    OUT whose data buffer wraps the address space: Status;
 *   7    avail index 100 ahead in a 16-entry ring: Status;
 *   8    queue size 12 (not a power of two): Status;
 *   9    a read of the report port, to show the VMM still answers other devices.
 * Notifications before DRIVER_OK are sent during every initialisation. */
.include "lib.inc"

.set DESC, 0x400000
.set AVAIL, 0x401000
.set USED, 0x402000
.set HDR, 0x410000
.set DATA, 0x411000
.set STAT, 0x412000
.set F_NEXT, 1
.set F_WRITE, 2

/* desc i, addr, len, flags, next: descriptor i of the table. Clobbers rax. */
.macro desc i, addr, len, flags, next
    movabs $\addr, %rax
    mov %rax, DESC + 16 * \i
    movl $\len, DESC + 16 * \i + 8
    movw $\flags, DESC + 16 * \i + 12
    movw $\next, DESC + 16 * \i + 14
.endm

/* Make chain `head` available in ring slot `slot` and notify queue 0. */
.macro submit slot, head
    movw $\head, AVAIL + 4 + 2 * \slot
    movw $(\slot + 1), AVAIL + 2
    movl $0, 0x50(%rbx)
.endm

/* Wait (bounded) until the used index reaches n. Clobbers ecx. */
.macro wait_used n
    mov $400000000, %ecx
.Lwu\@:
    cmpw $\n, USED + 2
    je .Lwu_done\@
    pause
    dec %ecx
    jnz .Lwu\@
.Lwu_done\@:
.endm

/* Write a request header: type, sector. Clobbers rax. */
.macro header type, sector
    movl $\type, HDR
    movl $0, HDR + 4
    mov \sector, %rax
    mov %rax, HDR + 8
    movb $0xff, STAT
.endm

.text
.globl _start
_start:
    map_high
    mov $MMIO_DEV, %ebx

    /* Phase 1: a looping chain 0 -> 1 -> 0. */
    mov $16, %esi
    call init_dev
    desc 0, HDR, 16, F_NEXT, 1
    desc 1, DATA, 512, (F_NEXT | F_WRITE), 0
    submit 0, 0
    call wait_needs_reset
    report 0, %eax
    mov 0x60(%rbx), %eax
    report 1, %eax

    /* Every offset, every width, read then written with all-ones. */
    mov $-1, %rax
    xor %ecx, %ecx
1:  movb (%rbx, %rcx), %dl
    movb %al, (%rbx, %rcx)
    inc %ecx
    cmp $0x1000, %ecx
    jb 1b
    xor %ecx, %ecx
2:  movw (%rbx, %rcx), %dx
    movw %ax, (%rbx, %rcx)
    inc %ecx
    cmp $0xfff, %ecx
    jb 2b
    xor %ecx, %ecx
3:  movl (%rbx, %rcx), %edx
    movl %eax, (%rbx, %rcx)
    inc %ecx
    cmp $0xffd, %ecx
    jb 3b
    xor %ecx, %ecx
4:  movq (%rbx, %rcx), %rdx
    movq %rax, (%rbx, %rcx)
    inc %ecx
    cmp $0xff9, %ecx
    jb 4b

    movl $0, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    report 2, %eax

    /* Phase 2: a good read of sector 0. */
    mov $16, %esi
    call init_dev
    header 0, $0
    desc 0, HDR, 16, F_NEXT, 1
    desc 1, DATA, 512, (F_NEXT | F_WRITE), 2
    desc 2, STAT, 1, F_WRITE, 0
    submit 0, 0
    wait_used 1
    movzbl STAT, %eax
    report 3, %eax
    report 4, DATA

    /* Phase 3: a write at sector = capacity (config offset 0, low dword). */
    mov 0x100(%rbx), %edi
    header 1, %rdi
    desc 1, DATA, 512, F_NEXT, 2
    submit 1, 0
    wait_used 2
    movzbl STAT, %eax
    report 5, %eax

    /* Phase 4: a write whose data buffer wraps the address space. */
    header 1, $1
    desc 1, 0xffffffffffffff00, 0x200, F_NEXT, 2
    submit 2, 0
    call wait_needs_reset
    report 6, %eax

    /* Phase 5: the avail index jumps 100 ahead. */
    mov $16, %esi
    call init_dev
    movw $100, AVAIL + 2
    movl $0, 0x50(%rbx)
    call wait_needs_reset
    report 7, %eax

    /* Phase 6: queue size 12. */
    mov $12, %esi
    call init_dev
    call wait_needs_reset
    report 8, %eax

    movl $0, 0x70(%rbx)
    mov $(REPORT + 4), %dx
    in %dx, %eax
    report 9, %eax
    exit_vm

/* Reset the device and set it up with one queue of %esi entries, the rings zeroed; a
 * notification is sent before DRIVER_OK (which the device must ignore). */
init_dev:
    movl $0, 0x70(%rbx)
    movl $0, AVAIL
    movl $0, USED
    movl $1, 0x70(%rbx)
    movl $3, 0x70(%rbx)
    movl $1, 0x24(%rbx)
    movl $1, 0x20(%rbx)             /* VIRTIO_F_VERSION_1 (bit 32) */
    movl $0, 0x24(%rbx)
    movl $0, 0x20(%rbx)
    movl $0xb, 0x70(%rbx)           /* + FEATURES_OK */
    movl $0, 0x30(%rbx)
    mov %esi, 0x38(%rbx)
    movl $DESC, 0x80(%rbx)
    movl $0, 0x84(%rbx)
    movl $AVAIL, 0x90(%rbx)
    movl $0, 0x94(%rbx)
    movl $USED, 0xa0(%rbx)
    movl $0, 0xa4(%rbx)
    movl $1, 0x44(%rbx)
    movl $0, 0x50(%rbx)             /* too early: ignored */
    movl $0xf, 0x70(%rbx)           /* + DRIVER_OK */
    ret

/* Poll Status (bounded) until DEVICE_NEEDS_RESET; returns Status in eax. Clobbers ecx. */
wait_needs_reset:
    mov $2000000, %ecx
1:  mov 0x70(%rbx), %eax
    test $0x40, %eax
    jnz 2f
    pause
    dec %ecx
    jnz 1b
2:  ret

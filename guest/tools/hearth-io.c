/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hearth-io: a block I/O load generator for hearth's benchmarks and tests, a
 * static nolibc program like /init. Built by guest/build.sh into /bin/hearth-io;
 * bench/block.py builds the same source for the host to run the same access
 * pattern on the image file directly.
 *
 *   hearth-io MODE PATH BYTES BS OPS [buffered]
 *
 * MODE is seqread, seqwrite, randread or randwrite. The I/O covers the first
 * BYTES bytes of PATH (a block device or a file) in requests of BS bytes (a
 * multiple of 4096). seq modes do OPS requests from offset 0 upwards, wrapping
 * at BYTES; rand modes do OPS requests at BS-aligned offsets
 *   BS * (xorshift64() % (BYTES / BS)),
 * xorshift64 (x ^= x << 13; x ^= x >> 7; x ^= x << 17) seeded with 1, so every
 * run (guest or host) touches the same offsets. PATH is opened with O_DIRECT
 * (the page cache of whoever runs this does not hide the device) unless
 * "buffered" is given. Writes end with fsync(), which is inside the timing.
 *
 * Written data: each 4 KiB block of a request holds 512 64-bit little-endian
 * words, word 0 = the block's byte offset in PATH, word k = k * 0x9e3779b97f4a7c15.
 * Reads sum every 64-bit word read (mod 2^64), so a host can check them.
 *
 * Output, one line on stdout:
 *   hearth-io: mode=M bs=N ops=N bytes=N ns=N sum=HEX
 * (ns from CLOCK_MONOTONIC around the I/O loop and the fsync; sum is 0 for writes).
 * Errors: "hearth-io: WHAT failed errno N" and exit status 1.
 */

#define HIO_O_DIRECT 040000
#define HIO_CLOCK_MONOTONIC 1
#define HIO_BLOCK 4096
#define HIO_MAX_BS (1UL << 20)
#define HIO_GOLDEN 0x9e3779b97f4a7c15ULL

static unsigned char buf[HIO_MAX_BS] __attribute__((aligned(4096)));

struct hio_ts {
	long sec;
	long nsec;
};

static void out(const char *s)
{
	write(1, s, strlen(s));
}

static char *put(char *p, const char *s)
{
	while (*s)
		*p++ = *s++;
	return p;
}

static int fail(const char *what, long ret)
{
	char line[128];
	char *p = put(line, "hearth-io: ");

	p = put(p, what);
	p = put(p, " failed errno ");
	p += u64toa_r(ret < 0 ? -ret : ret, p);
	*p++ = '\n';
	write(1, line, p - line);
	return 1;
}

static int usage(void)
{
	out("usage: hearth-io seqread|seqwrite|randread|randwrite PATH BYTES BS OPS [buffered]\n");
	return 2;
}

static unsigned long long now_ns(void)
{
	struct hio_ts ts = { 0, 0 };

	my_syscall2(__NR_clock_gettime, HIO_CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.sec * 1000000000ULL + (unsigned long long)ts.nsec;
}

/* A decimal argument, 0 if it is not one. */
static unsigned long num(const char *s)
{
	unsigned long n = 0;

	if (!*s)
		return 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return 0;
		n = n * 10 + (unsigned long)(*s - '0');
	}
	return n;
}

static unsigned long long xorshift64(unsigned long long *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

int main(int argc, char **argv)
{
	unsigned long long seed = 1, sum = 0, t0, t1, *w;
	unsigned long bytes, bs, ops, nblocks, i, k, off;
	int is_write, is_rand, flags;
	char line[192];
	const char *mode;
	char *p;
	long fd, r;

	if (argc < 6 || argc > 7)
		return usage();
	mode = argv[1];
	if (!strcmp(mode, "seqread") || !strcmp(mode, "seqwrite"))
		is_rand = 0;
	else if (!strcmp(mode, "randread") || !strcmp(mode, "randwrite"))
		is_rand = 1;
	else
		return usage();
	is_write = !strcmp(mode + (is_rand ? 4 : 3), "write");
	bytes = num(argv[3]);
	bs = num(argv[4]);
	ops = num(argv[5]);
	if (!bs || bs % HIO_BLOCK || bs > HIO_MAX_BS || bytes < bs || !ops)
		return usage();
	if (argc == 7 && strcmp(argv[6], "buffered"))
		return usage();
	nblocks = bytes / bs;

	flags = is_write ? O_RDWR : O_RDONLY;
	if (argc == 6)
		flags |= HIO_O_DIRECT;
	/* The raw system call: it returns -errno (nolibc's open() returns -1 and sets errno). */
	fd = my_syscall3(__NR_open, argv[2], flags, 0);
	if (fd < 0)
		return fail("open", fd);

	w = (unsigned long long *)buf;
	for (k = 0; k < bs / 8; k++)
		w[k] = (k % (HIO_BLOCK / 8)) * HIO_GOLDEN;

	t0 = now_ns();
	for (i = 0; i < ops; i++) {
		off = (is_rand ? xorshift64(&seed) % nblocks : i % nblocks) * bs;
		if (is_write) {
			for (k = 0; k < bs / HIO_BLOCK; k++)
				w[k * (HIO_BLOCK / 8)] = off + k * HIO_BLOCK;
			r = my_syscall4(__NR_pwrite64, fd, buf, bs, off);
		} else {
			r = my_syscall4(__NR_pread64, fd, buf, bs, off);
			if (r == (long)bs)
				for (k = 0; k < bs / 8; k++)
					sum += w[k];
		}
		if (r != (long)bs)
			return fail(is_write ? "pwrite" : "pread", r < 0 ? r : 0);
	}
	if (is_write) {
		r = my_syscall1(__NR_fsync, fd);
		if (r < 0)
			return fail("fsync", r);
	}
	t1 = now_ns();
	close(fd);

	p = put(line, "hearth-io: mode=");
	p = put(p, mode);
	p = put(p, " bs=");
	p += u64toa_r(bs, p);
	p = put(p, " ops=");
	p += u64toa_r(ops, p);
	p = put(p, " bytes=");
	p += u64toa_r((unsigned long long)ops * bs, p);
	p = put(p, " ns=");
	p += u64toa_r(t1 - t0, p);
	p = put(p, " sum=");
	for (k = 16; k-- > 0;)
		*p++ = "0123456789abcdef"[(sum >> (4 * k)) & 15];
	*p++ = '\n';
	write(1, line, p - line);
	return 0;
}

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What hearth's guest tools (static nolibc programs built by guest/build.sh)
 * share: console output, FNV-1a 64 and the test byte pattern. TOOL_NAME must
 * be defined before this is included.
 * Console lines are written whole (one write() per line), so processes that
 * share the console do not interleave within a line; every message ends
 * with "\n".
 */

static char line_buf[512];
static unsigned long line_len;

static void out(const char *s)
{
	while (*s) {
		if (line_len < sizeof(line_buf))
			line_buf[line_len++] = *s;
		if (*s++ == '\n' || line_len == sizeof(line_buf)) {
			write(1, line_buf, line_len);
			line_len = 0;
		}
	}
}

static void out_num(unsigned long long n)
{
	char b[24];
	char *p = b + sizeof(b);

	*--p = 0;
	do {
		*--p = '0' + n % 10;
		n /= 10;
	} while (n);
	out(p);
}

static void out_hex(unsigned long long h)
{
	char b[17];
	int i;

	for (i = 15; i >= 0; i--, h >>= 4)
		b[i] = "0123456789abcdef"[h & 15];
	b[16] = 0;
	out(b);
}

/* "TOOL_NAME: WHAT failed errno N" (ret is the negative errno); returns 1. */
static int fail(const char *what, long ret)
{
	out(TOOL_NAME ": ");
	out(what);
	out(" failed errno ");
	out_num(-ret);
	out("\n");
	return 1;
}

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

/* 64-bit FNV-1a of p[0..n), continuing from h (start with FNV_OFFSET). */
static unsigned long long fnv(unsigned long long h, const unsigned char *p, long n)
{
	while (n-- > 0) {
		h ^= *p++;
		h *= FNV_PRIME;
	}
	return h;
}

/*
 * Writes `bytes` bytes of the test pattern byte[i] = (i * 2654435761 mod 2^32)
 * >> 24 to fd in calls of up to `size` bytes (buf is the scratch space) and
 * returns their FNV-1a in *hash. 0, or fail()'s 1 on a write error.
 */
static int send_pattern(long fd, unsigned long bytes, char *buf, unsigned long size, unsigned long long *hash)
{
	unsigned long long h = FNV_OFFSET;
	unsigned long i = 0;

	while (i < bytes) {
		unsigned long n = bytes - i < size ? bytes - i : size;
		unsigned long j;
		long w, off = 0;

		for (j = 0; j < n; j++)
			buf[j] = (unsigned char)(((unsigned int)(i + j) * 2654435761u) >> 24);
		h = fnv(h, (unsigned char *)buf, n);
		while (off < (long)n) {
			w = write(fd, buf + off, n - off);
			if (w <= 0)
				return fail("write", w < 0 ? -errno : 0);
			off += w;
		}
		i += n;
	}
	*hash = h;
	return 0;
}

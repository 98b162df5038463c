/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Output helpers shared by hearth's guest tools (static nolibc programs built
 * by guest/build.sh): TOOL_NAME must be defined before this is included.
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

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hearth-net: the guest end of hearth's TCP tests and benchmarks, a static
 * nolibc program like /init. Built by guest/build.sh into /bin/hearth-net.
 * busybox nc writes a few KiB per syscall, and a PVM guest pays dearly per
 * syscall; this program moves data in 256 KiB read()/write() calls, so TSO
 * carries 64 KiB segments. The guest is always the TCP client; the host listens.
 *
 *   hearth-net recv IP PORT
 *       connect to IP:PORT, read until end of file, print
 *       "hearth-net: recv len=N ns=T fnv=HEX".
 *   hearth-net send IP PORT BYTES
 *       connect to IP:PORT, send BYTES bytes of the pattern
 *       byte[i] = (i * 2654435761 mod 2^32) >> 24, shut down writing, wait for
 *       the host to close (it has read everything), print
 *       "hearth-net: send len=N ns=T fnv=HEX".
 *   hearth-net ping IP PORT COUNT SIZE
 *       connect to IP:PORT (TCP_NODELAY), COUNT times write SIZE bytes and read
 *       SIZE bytes back (the host echoes them), print
 *       "hearth-net: ping count=N size=S mean_us=X p50_us=Y min_us=Z".
 *
 * fnv is the 64-bit FNV-1a of the bytes (hearth-tool.h); ns is
 * CLOCK_MONOTONIC from the completed connect to the end of file. Errors:
 * "hearth-net: WHAT failed errno N", exit status 1.
 */

#define TOOL_NAME "hearth-net"
#include "hearth-tool.h"

#define HN_AF_INET 2
#define HN_SOCK_STREAM 1
#define HN_SHUT_WR 1
#define HN_IPPROTO_TCP 6
#define HN_TCP_NODELAY 1
#define HN_CLOCK_MONOTONIC 1
#define MAX_PINGS 100000

struct hn_sockaddr_in {
	unsigned short family;
	unsigned short port; /* big endian */
	unsigned int addr;   /* big endian */
	unsigned char zero[8];
};

struct hn_ts {
	long sec;
	long nsec;
};

static char buf[262144];
static unsigned long long samples[MAX_PINGS];

static unsigned long long now_ns(void)
{
	struct hn_ts ts = { 0, 0 };

	my_syscall2(__NR_clock_gettime, HN_CLOCK_MONOTONIC, &ts);
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
		n = n * 10 + (*s - '0');
	}
	return n;
}

/* Dotted quad to a big-endian address; 0 if it is not one. */
static unsigned int parse_ip(const char *s)
{
	unsigned int a = 0, part;
	int dots = 0;

	for (;;) {
		if (*s < '0' || *s > '9')
			return 0;
		for (part = 0; *s >= '0' && *s <= '9'; s++)
			part = part * 10 + (*s - '0');
		if (part > 255)
			return 0;
		a = a << 8 | part;
		if (!*s)
			break;
		if (*s++ != '.' || ++dots > 3)
			return 0;
	}
	if (dots != 3)
		return 0;
	return __builtin_bswap32(a);
}

/* A connected TCP socket, or a negative errno (after printing it). */
static long dial(const char *ip, const char *port)
{
	struct hn_sockaddr_in a;
	unsigned long p = num(port);
	long fd, r;

	memset(&a, 0, sizeof(a));
	a.family = HN_AF_INET;
	a.port = __builtin_bswap16((unsigned short)p);
	a.addr = parse_ip(ip);
	if (!a.addr || !p || p > 65535) {
		out("hearth-net: bad address ");
		out(ip);
		out(":");
		out(port);
		out("\n");
		return -22;
	}
	fd = my_syscall3(__NR_socket, HN_AF_INET, HN_SOCK_STREAM, 0);
	if (fd < 0) {
		fail("socket", fd);
		return fd;
	}
	r = my_syscall3(__NR_connect, fd, &a, sizeof(a));
	if (r < 0) {
		fail("connect", r);
		return r;
	}
	return fd;
}

static int report(const char *what, unsigned long long len, unsigned long long ns,
		  unsigned long long h)
{
	out("hearth-net: ");
	out(what);
	out(" len=");
	out_num(len);
	out(" ns=");
	out_num(ns);
	out(" fnv=");
	out_hex(h);
	out("\n");
	return 0;
}

static int do_recv(const char *ip, const char *port)
{
	unsigned long long h = FNV_OFFSET, total = 0, t0;
	long fd = dial(ip, port), n;

	if (fd < 0)
		return 1;
	t0 = now_ns();
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		h = fnv(h, (unsigned char *)buf, n);
		total += n;
	}
	if (n < 0)
		return fail("read", -errno);
	return report("recv", total, now_ns() - t0, h);
}

static int do_send(const char *ip, const char *port, unsigned long bytes)
{
	unsigned long long h = 0, t0;
	long fd = dial(ip, port), r;

	if (fd < 0)
		return 1;
	t0 = now_ns();
	if (send_pattern(fd, bytes, buf, sizeof(buf), &h))
		return 1;
	my_syscall2(__NR_shutdown, fd, HN_SHUT_WR);
	/* The host closes once it has read everything. */
	while ((r = read(fd, buf, sizeof(buf))) > 0)
		;
	return report("send", bytes, now_ns() - t0, h);
}

static void sort(unsigned long long *v, long n)
{
	long gap, i, j;

	for (gap = n / 2; gap > 0; gap /= 2)
		for (i = gap; i < n; i++)
			for (j = i; j >= gap && v[j - gap] > v[j]; j -= gap) {
				unsigned long long t = v[j];

				v[j] = v[j - gap];
				v[j - gap] = t;
			}
}

static int do_ping(const char *ip, const char *port, long count, long size)
{
	unsigned long long sum = 0;
	int one = 1;
	long fd, i, r;

	if (count < 1 || count > MAX_PINGS || size < 1 || size > (long)sizeof(buf)) {
		out("hearth-net: ping needs COUNT in [1, 100000] and SIZE in [1, 262144]\n");
		return 2;
	}
	fd = dial(ip, port);
	if (fd < 0)
		return 1;
	r = my_syscall5(__NR_setsockopt, fd, HN_IPPROTO_TCP, HN_TCP_NODELAY, &one, sizeof(one));
	if (r < 0)
		return fail("setsockopt", r);
	memset(buf, 'p', size);
	for (i = 0; i < count; i++) {
		unsigned long long t0 = now_ns();
		long got = 0;

		r = write(fd, buf, size);
		if (r != size)
			return fail("write", r < 0 ? -errno : 0);
		while (got < size) {
			r = read(fd, buf + got, size - got);
			if (r <= 0)
				return fail("read", r < 0 ? -errno : 0);
			got += r;
		}
		samples[i] = now_ns() - t0;
		sum += samples[i];
	}
	close(fd);
	sort(samples, count);
	out("hearth-net: ping count=");
	out_num(count);
	out(" size=");
	out_num(size);
	out(" mean_us=");
	out_num(sum / count / 1000);
	out(" p50_us=");
	out_num(samples[count / 2] / 1000);
	out(" min_us=");
	out_num(samples[0] / 1000);
	out("\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "recv"))
		return do_recv(argv[2], argv[3]);
	if (argc == 5 && !strcmp(argv[1], "send"))
		return do_send(argv[2], argv[3], num(argv[4]));
	if (argc == 6 && !strcmp(argv[1], "ping"))
		return do_ping(argv[2], argv[3], num(argv[4]), num(argv[5]));
	out("usage: hearth-net recv IP PORT | send IP PORT BYTES | ping IP PORT COUNT SIZE\n");
	return 2;
}

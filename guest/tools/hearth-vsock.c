/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hearth-vsock: the guest end of hearth's vsock tests, a static nolibc
 * program like /init (busybox has no AF_VSOCK). Built by guest/build.sh into
 * /bin/hearth-vsock.
 *
 *   hearth-vsock listen PORT COUNT
 *       listen on vsock port PORT, print "hearth-vsock: listening PORT",
 *       serve COUNT connections (each in its own process): read until end
 *       of file, reply "len=N fnv=HEX\n" (64-bit FNV-1a of the bytes), close.
 *   hearth-vsock send CID PORT BYTES
 *       connect to CID:PORT, send BYTES bytes of the pattern
 *       byte[i] = (i * 2654435761 mod 2^32) >> 24, shut down writing, read the
 *       reply, print "hearth-vsock: sent len=N fnv=HEX reply=REPLY".
 *       A refused connection prints "hearth-vsock: connect CID:PORT failed
 *       errno N" and exits 1.
 */

#define TOOL_NAME "hearth-vsock"
#include "hearth-tool.h"

#define AF_VSOCK 40
#define SOCK_STREAM 1
#define SHUT_WR 1

struct sockaddr_vm {
	unsigned short svm_family;
	unsigned short svm_reserved1;
	unsigned int svm_port;
	unsigned int svm_cid;
	unsigned char svm_flags;
	unsigned char svm_zero[3];
};

static char buf[65536];

static long vsock_socket(void)
{
	return my_syscall3(__NR_socket, AF_VSOCK, SOCK_STREAM, 0);
}

static struct sockaddr_vm addr(unsigned int cid, unsigned int port)
{
	struct sockaddr_vm a;

	memset(&a, 0, sizeof(a));
	a.svm_family = AF_VSOCK;
	a.svm_cid = cid;
	a.svm_port = port;
	return a;
}


static void serve(int fd)
{
	unsigned long long h = FNV_OFFSET;
	unsigned long total = 0;
	char line[64];
	char *p = line;
	long n;
	int i;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		h = fnv(h, (unsigned char *)buf, n);
		total += n;
	}
	memcpy(p, "len=", 4);
	p += 4;
	p += u64toa_r(total, p);
	memcpy(p, " fnv=", 5);
	p += 5;
	for (i = 15; i >= 0; i--)
		p[15 - i] = "0123456789abcdef"[(h >> (4 * i)) & 15];
	p += 16;
	*p++ = '\n';
	write(fd, line, p - line);
	close(fd);
}

static int do_listen(unsigned int port, long count)
{
	struct sockaddr_vm a = addr(-1U, port);
	long fd = vsock_socket();
	long c, served = 0;
	int status;

	if (fd < 0)
		return fail("socket", fd);
	c = my_syscall3(__NR_bind, fd, &a, sizeof(a));
	if (c < 0)
		return fail("bind", c);
	c = my_syscall2(__NR_listen, fd, 64);
	if (c < 0)
		return fail("listen", c);
	out("hearth-vsock: listening ");
	out_num(port);
	out("\n");
	while (served < count) {
		c = my_syscall3(__NR_accept, fd, 0, 0);
		if (c < 0)
			return fail("accept", c);
		served++;
		if (fork() == 0) {
			serve(c);
			exit(0);
		}
		close(c);
	}
	while (waitpid(-1, &status, 0) > 0)
		;
	out("hearth-vsock: served ");
	out_num(served);
	out("\n");
	return 0;
}

static int do_send(unsigned int cid, unsigned int port, unsigned long bytes)
{
	struct sockaddr_vm a = addr(cid, port);
	unsigned long long h = 0;
	unsigned long got = 0;
	long fd = vsock_socket();
	long r;

	if (fd < 0)
		return fail("socket", fd);
	r = my_syscall3(__NR_connect, fd, &a, sizeof(a));
	if (r < 0) {
		out("hearth-vsock: connect ");
		out_num(cid);
		out(":");
		out_num(port);
		out(" failed errno ");
		out_num(-r);
		out("\n");
		return 1;
	}
	if (send_pattern(fd, bytes, buf, sizeof(buf), &h))
		return 1;
	my_syscall2(__NR_shutdown, fd, SHUT_WR);
	while (got < sizeof(buf) - 1 && (r = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += r;
	while (got > 0 && buf[got - 1] == '\n')
		got--;
	buf[got] = 0;
	out("hearth-vsock: sent len=");
	out_num(bytes);
	out(" fnv=");
	out_hex(h);
	out(" reply=");
	out(buf);
	out("\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "listen"))
		return do_listen(atol(argv[2]), atol(argv[3]));
	if (argc == 5 && !strcmp(argv[1], "send"))
		return do_send(atol(argv[2]), atol(argv[3]), atol(argv[4]));
	out("usage: hearth-vsock listen PORT COUNT | send CID PORT BYTES\n");
	return 2;
}

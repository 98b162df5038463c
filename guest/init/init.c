/* SPDX-License-Identifier: GPL-2.0 */
/*
 * hearth guest /init: a tiny static PID 1 built against the kernel tree's
 * nolibc (tools/include/nolibc/nolibc.h, passed with -include), no libc.
 *
 * Contract (see docs/guest.md):
 *   1. mount /proc, /sys, /dev (devtmpfs) and /tmp (tmpfs) where the
 *      directory exists; failures are reported but not fatal;
 *   2. print "hearth-guest: init ready" then "hearth-guest: cpus N" on the
 *      console;
 *   3. run argv[1..] (everything after " -- " on the kernel command line),
 *      or an interactive /bin/sh when there are no arguments, in a new
 *      session with the console tty as controlling terminal;
 *   4. print "hearth-guest: exit status N", sync, print
 *      "hearth-guest: powering off" and reboot(RESTART) (reboot=k makes the
 *      kernel reset through the i8042, which the VMM treats as a clean exit).
 *
 * Every system call is expensive on a PVM host (and fork+exec much more so),
 * so this does the minimum: one vfork, one execve.
 */

#define PATH_ENV "PATH=/bin:/sbin"
#define MAX_ENV 64

static void out(const char *s)
{
	write(1, s, strlen(s));
}

static void out_num(const char *prefix, long n)
{
	char buf[96];
	char *p = buf;
	const char *q;

	for (q = prefix; *q && p < buf + 64; q++)
		*p++ = *q;
	p += i64toa_r(n, p);
	*p++ = '\n';
	write(1, buf, p - buf);
}

static void warn(const char *what, const char *arg)
{
	char buf[160];
	char *p = buf;
	const char *q;

	for (q = "hearth-guest: "; *q; q++)
		*p++ = *q;
	for (q = what; *q && p < buf + 100; q++)
		*p++ = *q;
	for (q = arg; *q && p < buf + 140; q++)
		*p++ = *q;
	for (q = " failed, errno "; *q; q++)
		*p++ = *q;
	p += i64toa_r(errno, p);
	*p++ = '\n';
	write(2, buf, p - buf);
}

static int is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR;
}

static void mount_fs(const char *src, const char *dir, const char *type,
		     unsigned long flags, const char *data)
{
	if (!is_dir(dir))
		return;
	if (mount(src, dir, type, flags, data) < 0 && errno != EBUSY)
		warn("mount ", dir);
}

/* Number of CPUs in a list like "0-3,5" (from /sys/devices/system/cpu/online). */
static long count_cpu_list(const char *s)
{
	long n = 0, a, b;

	while (*s >= '0' && *s <= '9') {
		a = 0;
		while (*s >= '0' && *s <= '9')
			a = a * 10 + (*s++ - '0');
		b = a;
		if (*s == '-') {
			s++;
			b = 0;
			while (*s >= '0' && *s <= '9')
				b = b * 10 + (*s++ - '0');
		}
		if (b >= a)
			n += b - a + 1;
		if (*s != ',')
			break;
		s++;
	}
	return n;
}

static long online_cpus(void)
{
	char buf[256];
	unsigned long mask[16];
	long n, i, len;
	int fd;

	fd = open("/sys/devices/system/cpu/online", O_RDONLY, 0);
	if (fd >= 0) {
		len = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (len > 0) {
			buf[len] = 0;
			n = count_cpu_list(buf);
			if (n > 0)
				return n;
		}
	}
	/* Fallback: CPUs this task may run on. */
	len = my_syscall3(__NR_sched_getaffinity, 0, sizeof(mask), mask);
	if (len <= 0)
		return 1;
	n = 0;
	for (i = 0; i < len / (long)sizeof(mask[0]); i++) {
		unsigned long w = mask[i];

		while (w) {
			w &= w - 1;
			n++;
		}
	}
	return n ? n : 1;
}

/* The console's real tty ("ttyS0"), so the shell gets job control (cttyhack). */
static int open_console_tty(void)
{
	char path[64] = "/dev/";
	long len;
	int fd, i;

	fd = open("/sys/class/tty/console/active", O_RDONLY, 0);
	if (fd >= 0) {
		len = read(fd, path + 5, sizeof(path) - 6);
		close(fd);
		if (len > 0) {
			/* take the last name listed (the preferred console) */
			path[5 + len] = 0;
			for (i = 5 + len - 1; i >= 5 && (path[i] == '\n' || path[i] == ' '); i--)
				path[i] = 0;
			for (; i >= 5 && path[i] != ' '; i--)
				;
			if (i >= 5) {
				char *src = path + i + 1, *dst = path + 5;

				while ((*dst++ = *src++))
					;
			}
			fd = open(path, O_RDWR, 0);
			if (fd >= 0)
				return fd;
		}
	}
	return open("/dev/console", O_RDWR, 0);
}

static void exec_path(char **argv, char **envp)
{
	static const char *const dirs[] = { "/bin/", "/sbin/" };
	char path[256];
	unsigned int i;
	size_t dl, nl;

	if (strchr(argv[0], '/')) {
		execve(argv[0], argv, envp);
		return;
	}
	nl = strlen(argv[0]);
	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		dl = strlen(dirs[i]);
		if (dl + nl + 1 > sizeof(path))
			continue;
		memcpy(path, dirs[i], dl);
		memcpy(path + dl, argv[0], nl + 1);
		execve(path, argv, envp);
		if (errno != ENOENT)
			return;
	}
}

/*
 * vfork + exec in a new session with the console as controlling tty.  The
 * child only makes system calls and never returns from this function.
 */
static __attribute__((noinline)) long spawn(char **argv, char **envp)
{
	long pid = my_syscall0(__NR_vfork);
	int fd;

	if (pid != 0)
		return pid;

	/* child */
	setsid();
	fd = open_console_tty();
	if (fd >= 0) {
		ioctl(fd, TIOCSCTTY, 0);
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	exec_path(argv, envp);
	warn("exec ", argv[0]);
	my_syscall1(__NR_exit, 127);
	return -1;
}

int main(int argc, char **argv, char **envp)
{
	static char *shell_argv[] = { "/bin/sh", 0 };
	static char *env[MAX_ENV + 2];
	char **cmd;
	long pid, ret;
	int status = 0, n = 0, i, fd;

	mount_fs("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
	mount_fs("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0);
	mount_fs("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	mount_fs("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");

	/* The kernel gives PID 1 the console as fds 0-2 if /dev/console
	 * existed in the initramfs; make sure of it now that /dev is mounted. */
	if (write(1, "", 0) < 0) {
		fd = open("/dev/console", O_RDWR, 0);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
			if (fd > 2)
				close(fd);
		}
	}

	out("hearth-guest: init ready\n");
	out_num("hearth-guest: cpus ", online_cpus());

	/* Environment: the kernel's (HOME, TERM, unknown a=b parameters) + PATH. */
	env[n++] = PATH_ENV;
	for (i = 0; envp && envp[i] && n < MAX_ENV; i++)
		if (strncmp(envp[i], "PATH=", 5) != 0)
			env[n++] = envp[i];
	env[n] = 0;

	cmd = argc > 1 ? argv + 1 : shell_argv;
	pid = spawn(cmd, env);
	if (pid < 0) {
		errno = -pid;
		warn("vfork", "");
		status = 127 << 8;
	} else {
		/* PID 1 also reaps orphans; stop when our command is done. */
		do {
			ret = my_syscall4(__NR_wait4, -1, &status, 0, 0);
		} while (ret != pid && (ret >= 0 || ret == -EINTR));
	}

	if ((status & 0x7f) == 0)
		out_num("hearth-guest: exit status ", (status >> 8) & 0xff);
	else
		out_num("hearth-guest: exit status ", 128 + (status & 0x7f));

	my_syscall0(__NR_sync);
	out("hearth-guest: powering off\n");
	reboot(LINUX_REBOOT_CMD_RESTART);
	/* Not reached; if it is, PID 1 exiting panics and panic=-1 reboots. */
	return 1;
}

"""Shared pieces of hearth's benchmark scripts (Python 3 standard library only).

- ELF64 parsing written here (section headers -> .symtab/.strtab -> symbol address and size;
  program headers -> file offset) and the binary patch that lets QEMU boot the guest on a PVM
  host: `int3_selftest` starts with `ret`, the `fwait` in `fpu__drop` becomes `nop`.
- Spawning a VMM, reading its console (stdout) until a marker line, with a monotonic clock
  started just before the spawn, a per-run timeout and a "no console output" stall timeout.
- Memory of a running VMM from /proc/<pid>/status and /proc/<pid>/smaps.

Nothing here touches processes it did not start.
"""

import hashlib
import os
import select
import shutil
import signal
import statistics
import struct
import subprocess
import time
from pathlib import Path

MARKER = b"hearth-guest: init ready"
BASE_CMDLINE = "console=ttyS0 reboot=k panic=-1 rodata=off"
# What hearth adds by itself on a PVM host (PVM_GUEST_CMDLINE in crates/vmm/src/host.rs). Both
# VMMs get them explicitly; hearth_cmd asks hearth to log the command line it really used, and
# check_hearth_cmdline() compares it with what QEMU got.
PVM_SWITCHES = "clearcpuid=xsave,popcnt,smap"


def is_pvm():
    return Path("/sys/module/kvm_pvm").exists()


def guest_cmdline(extra=""):
    parts = [BASE_CMDLINE]
    if is_pvm():
        parts.append(PVM_SWITCHES)
    if extra:
        parts.append(extra)
    return " ".join(parts)


def repo_root():
    return Path(__file__).resolve().parent.parent


def default_guest_dir():
    cache = os.environ.get("HEARTH_CACHE")
    root = Path(cache) if cache else Path.home() / ".cache" / "hearth"
    return root / "guest" / "default"


def bench_cache_dir():
    cache = os.environ.get("HEARTH_CACHE")
    root = Path(cache) if cache else Path.home() / ".cache" / "hearth"
    d = root / "bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


# --- ELF ----------------------------------------------------------------------------------


class Elf:
    """The parts of an ELF64 little-endian file the patcher needs."""

    def __init__(self, data):
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ValueError("not an ELF64 little-endian file")
        self.data = data
        (self.phoff, self.shoff) = struct.unpack_from("<QQ", data, 0x20)
        (self.phentsize, self.phnum, self.shentsize, self.shnum, self.shstrndx) = struct.unpack_from(
            "<HHHHH", data, 0x36
        )
        self.sections = [self._section(i) for i in range(self.shnum)]
        names = self.sections[self.shstrndx]
        for s in self.sections:
            s["name"] = self._cstr(names["offset"] + s["name_off"])
        self.segments = [self._segment(i) for i in range(self.phnum)]

    def _cstr(self, off):
        end = self.data.index(b"\0", off)
        return self.data[off:end].decode("ascii", "replace")

    def _section(self, i):
        off = self.shoff + i * self.shentsize
        (name, typ, flags, addr, offset, size, link, info, align, entsize) = struct.unpack_from(
            "<IIQQQQIIQQ", self.data, off
        )
        return dict(name_off=name, type=typ, addr=addr, offset=offset, size=size, link=link, entsize=entsize)

    def _segment(self, i):
        off = self.phoff + i * self.phentsize
        (typ, flags, offset, vaddr, paddr, filesz, memsz, align) = struct.unpack_from(
            "<IIQQQQQQ", self.data, off
        )
        return dict(type=typ, offset=offset, vaddr=vaddr, filesz=filesz)

    def section(self, name):
        return next((s for s in self.sections if s["name"] == name), None)

    def symbol(self, name):
        """(vaddr, size) of a symbol from .symtab (SHT_SYMTAB = 2)."""
        want = name.encode()
        for symtab in (s for s in self.sections if s["type"] == 2):
            strtab = self.sections[symtab["link"]]
            for i in range(symtab["size"] // 24):
                st_name, st_info, st_other, st_shndx, value, size = struct.unpack_from(
                    "<IBBHQQ", self.data, symtab["offset"] + 24 * i
                )
                if st_name == 0 or st_shndx == 0:
                    continue
                off = strtab["offset"] + st_name
                if self.data[off : off + len(want) + 1] == want + b"\0":
                    return value, size
        raise KeyError(f"symbol {name} not in the ELF symbol table")

    def file_offset(self, vaddr):
        """File offset of a virtual address, through the PT_LOAD program headers (type 1)."""
        for p in self.segments:
            if p["type"] == 1 and p["vaddr"] <= vaddr < p["vaddr"] + p["filesz"]:
                return p["offset"] + (vaddr - p["vaddr"])
        raise ValueError(f"address {vaddr:#x} is in no PT_LOAD segment")

    def extable_insns(self):
        """Instruction addresses in __ex_table (x86 6.1: int insn, fixup, data; self-relative)."""
        s = self.section("__ex_table")
        if not s:
            return set()
        out = set()
        for i in range(s["size"] // 12):
            (insn,) = struct.unpack_from("<i", self.data, s["offset"] + 12 * i)
            out.add((s["addr"] + 12 * i + insn) & 0xFFFFFFFFFFFFFFFF)
        return out


ENDBR64 = b"\xf3\x0f\x1e\xfa"


def plan_patches(data):
    """Where the two patches go: [(what, vaddr, file offset, old bytes, new bytes)]."""
    elf = Elf(data)
    patches = []

    addr, size = elf.symbol("int3_selftest")
    off = elf.file_offset(addr)
    if data[off : off + 4] == ENDBR64:  # IBT kernels: keep the landing pad, return after it
        addr, off = addr + 4, off + 4
    patches.append(("int3_selftest: first instruction -> ret", addr, off, data[off : off + 1], b"\xc3"))

    addr, size = elf.symbol("fpu__drop")
    off = elf.file_offset(addr)
    body = data[off : off + size]
    candidates = [addr + i for i, b in enumerate(body) if b == 0x9B]
    # The fwait has an exception-table entry (EX_TYPE_FPU_RESTORE); a 0x9b byte inside some other
    # instruction does not. Fall back to "the only 0x9b byte" for kernels without __ex_table.
    in_table = [a for a in candidates if a in elf.extable_insns()]
    chosen = in_table if in_table else candidates
    if len(chosen) != 1:
        raise ValueError(f"expected one fwait (0x9b) in fpu__drop, found {len(chosen)} at {[hex(a) for a in chosen]}")
    faddr = chosen[0]
    foff = elf.file_offset(faddr)
    patches.append(("fpu__drop: fwait -> nop", faddr, foff, data[foff : foff + 1], b"\x90"))
    return patches


def patched_kernel(vmlinux):
    """A patched copy of `vmlinux` in the bench cache (made once per kernel), and the patch list."""
    data = Path(vmlinux).read_bytes()
    key = hashlib.sha256(data).hexdigest()[:16]
    out = bench_cache_dir() / f"vmlinux-{key}-noint3-nofwait"
    patches = plan_patches(data)
    if not out.exists():
        buf = bytearray(data)
        for what, addr, off, old, new in patches:
            if old == new:
                continue
            buf[off : off + len(new)] = new
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(bytes(buf))
        tmp.replace(out)
    return out, patches


def describe_patches(patches):
    return [f"{what}: vaddr {addr:#x}, file offset {off:#x}, {old.hex()} -> {new.hex()}" for what, addr, off, old, new in patches]


# --- running a VMM --------------------------------------------------------------------------


def hearth_cmd(hearth, kernel, initrd, vcpus, mem, cmdline, timeout, stats=False, guest_cmd=("/bin/true",)):
    cmd = [str(hearth), "--log-level", "info", "run", "--kernel", str(kernel), "--initrd", str(initrd), "--vcpus", str(vcpus),
           "--memory", str(mem), "--cmdline", cmdline, "--timeout", str(timeout)]
    if stats:
        cmd.append("--stats")
    return cmd + ["--", *guest_cmd]


def hearth_used_cmdline(stderr):
    """The kernel command line hearth logged (`--log-level info`), or None."""
    for line in stderr.splitlines():
        i = line.find("kernel command line: ")
        if i >= 0:
            return line[i + len("kernel command line: "):].strip()
    return None


def guest_append(cmdline, guest_cmd=("/bin/true",)):
    return cmdline + (" -- " + " ".join(guest_cmd) if guest_cmd else "")


def qemu_cpu():
    """`-cpu` for QEMU. On a PVM host plain `-cpu host` aborts at start ("failed to set MSR 0x10a",
    IA32_ARCH_CAPABILITIES, then an assertion in kvm_buf_set_msrs): drop that one feature."""
    return "host,-arch-capabilities" if is_pvm() else "host"


def qemu_cmd(kernel, initrd, vcpus, mem, cmdline, guest_cmd=("/bin/true",), cpu=None):
    cpu = cpu or qemu_cpu()
    append = guest_append(cmdline, guest_cmd)
    return ["qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-cpu", cpu, "-m", str(mem), "-smp", str(vcpus),
            "-nographic", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd), "-append", append]


def read_kib(path, key):
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_seconds(pid):
    """utime + stime of a process, all threads (/proc/<pid>/stat fields 14 and 15). On a PVM host
    the guest's emulated ring 0 runs inside KVM_RUN, so it is charged here as system time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def guest_ram_kib(pid, mem_mib):
    """Resident KiB of the guest-RAM mapping in /proc/<pid>/smaps: the anonymous mapping of
    at least `mem_mib` MiB (at most 1 GiB more) with the most resident memory. (size KiB, rss KiB)."""
    best = None
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return None
    cur = None
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            path = fields[5] if len(fields) > 5 else ""
            cur = dict(path=path, size=0, rss=0)
            continue
        if cur is None:
            continue
        if fields[0] == "Size:":
            cur["size"] = int(fields[1])
        elif fields[0] == "Rss:":
            cur["rss"] = int(fields[1])
            anon = cur["path"] == "" or cur["path"].startswith("/memfd:") or cur["path"] == "[anon]"
            if anon and mem_mib * 1024 <= cur["size"] <= (mem_mib + 1024) * 1024:
                if best is None or cur["rss"] > best[1]:
                    best = (cur["size"], cur["rss"])
    return best


class RunResult:
    def __init__(self):
        self.marker_s = None       # seconds from just before spawn to the marker line
        self.end_s = None          # seconds from spawn to process exit (or kill)
        self.rc = None
        self.outcome = None        # "marker", "exited", "timeout", "stalled"
        self.console = b""
        self.stderr = ""
        self.rss_kib = None        # VmRSS right after the marker
        self.guest_ram = None      # (size KiB, rss KiB) of the guest RAM mapping right after the marker
        self.killed = False
        self.first_err_s = None    # seconds from spawn to the first byte on stderr
        self.cpu_s = None          # CPU time (user + system, all threads) of the VMM at the marker


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_and_collect(proc):
    """Stops `proc` (see _stop), closes its pipes and returns what it wrote to stderr."""
    _stop(proc)
    err = proc.stderr.read().decode("utf-8", "replace")
    proc.stdout.close()
    proc.stderr.close()
    return err


def run_vm(cmd, timeout, mem_mib=128, stall=None, after_marker="wait", after_timeout=30.0, stop_on_stderr=None):
    """Spawns `cmd`, reads its stdout (the guest console) until MARKER, and its stderr.
    after_marker: "wait" lets it end by itself (killed after `after_timeout` s), "kill" stops it
    at once. `stall`: give up if the console is silent this long before the marker.
    `stop_on_stderr`: a bytes pattern; once it shows up on stderr the VMM has failed — collect
    its output for one more second, then stop it. Returns a RunResult."""
    r = RunResult()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    buf, err = bytearray(), bytearray()
    open_fds = {out_fd, err_fd}
    last_out = t0
    limit = t0 + timeout
    failed_at = None
    while open_fds:
        now = time.monotonic()
        if failed_at is not None and now >= failed_at + 1.0:
            r.outcome, r.killed = "failed", True
            break
        if now >= limit:
            if r.marker_s is None:
                r.outcome = "timeout"
            r.killed = True
            break
        if stall and r.marker_s is None and now - last_out >= stall:
            r.outcome, r.killed = "stalled", True
            break
        ready, _, _ = select.select(list(open_fds), [], [], max(min(limit - now, 0.5), 0.01))
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
                continue
            t = time.monotonic()
            if fd == err_fd:
                if r.first_err_s is None:
                    r.first_err_s = t - t0
                err += chunk
                if stop_on_stderr and failed_at is None and stop_on_stderr in err:
                    failed_at = t
                continue
            last_out = t
            buf += chunk
            if r.marker_s is None and MARKER in buf:
                r.marker_s = t - t0
                r.outcome = "marker"
                r.cpu_s = cpu_seconds(proc.pid)
                r.rss_kib = read_kib(f"/proc/{proc.pid}/status", "VmRSS")
                r.guest_ram = guest_ram_kib(proc.pid, mem_mib)
                limit = t + after_timeout
                if after_marker == "kill":
                    r.killed = True
                    open_fds.clear()
    _stop(proc)
    r.end_s = time.monotonic() - t0
    r.rc = proc.returncode
    if r.outcome is None:
        r.outcome = "exited"
    for fd, sink in ((out_fd, buf), (err_fd, err)):
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], 0.2)
                chunk = os.read(fd, 65536) if ready else b""
                if not chunk:
                    break
                sink += chunk
        except OSError:
            pass
    proc.stdout.close()
    proc.stderr.close()
    r.stderr = err.decode("utf-8", "replace")
    r.console = bytes(buf)
    return r


def console_tail(r, lines=8):
    text = r.console.decode("utf-8", "replace").replace("\r", "")
    return [l for l in text.splitlines() if l.strip()][-lines:]


def median(xs):
    return statistics.median(xs) if xs else None


def fmt_s(x):
    return "—" if x is None else f"{x:.2f}"


def require(tool):
    if not shutil.which(tool):
        raise SystemExit(f"bench: `{tool}` not found (bench/run-all.sh installs it with apt-get)")


def find_hearth(arg=None):
    p = Path(arg) if arg else repo_root() / "target" / "release" / "hearth"
    if not p.exists():
        raise SystemExit(f"bench: {p} missing: run `cargo build --release -p hearth`")
    return p


def find_guest(kernel=None, initrd=None):
    d = default_guest_dir()
    k = Path(kernel) if kernel else d / "vmlinux"
    i = Path(initrd) if initrd else d / "initramfs.cpio"
    for p in (k, i):
        if not p.exists():
            raise SystemExit(f"bench: {p} missing: build the guest with guest/build.sh")
    return k.resolve(), i.resolve()


def session_line():
    """When, which hearth commit, and the host's load average: the first line of a section."""
    commit = subprocess.run(["git", "-C", str(repo_root()), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (f"Session: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, hearth {commit or '?'}, "
            f"load average at start {load} (the host is shared: other engineers' VMs ran at the same time).")

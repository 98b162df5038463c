#!/usr/bin/env python3
"""Block I/O, hearth vs QEMU microvm vs the host: sequential 1 MiB and random 4 KiB reads and
writes with O_DIRECT on a virtio-blk disk backed by a raw image file, measured inside the guest
by /bin/hearth-io (guest/tools/hearth-io.c), and the same program, built for the host, on the
image file directly.

One scratch image (--image-mib, filled with non-zero bytes so nothing reads holes) serves every
configuration. Each guest boots the same binary-patched kernel (QEMU cannot boot the unpatched one
on a PVM host, see boot.py) and initramfs with the same command line, 1 vCPU, 256 MiB, and runs
all four workloads in one boot: seqread, randread, seqwrite, randwrite (writes end with fsync,
inside the timing). hearth-io's own CLOCK_MONOTONIC timing covers only the I/O loop, so boot
time is not in the numbers.

Configurations (one at a time, order rotating each round):
- hearth: `--drive path=IMG` (buffered I/O on the image through the host page cache,
  synchronous on the event loop; a guest flush is fdatasync).
- QEMU microvm, virtio-blk-device, `cache=writeback,aio=threads`: the same semantics as hearth
  (host page cache, flush = fdatasync), I/O in QEMU's thread pool. The reference for the ratio.
- QEMU microvm, `cache=none,aio=threads`: O_DIRECT on the host too (no host page cache).
- host, O_DIRECT on the image file; host, buffered (page cache, fsync at the end of writes).

Prints markdown; medians of --runs runs.
"""

import argparse
import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

MIB = 1 << 20
DONE = b"io-done-42"
LINUX_TARBALL = "/usr/src/linux-source-6.1.tar.xz"


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="runs per configuration (default 3)")
    p.add_argument("--image-mib", type=int, default=256, help="scratch image size in MiB (default 256)")
    p.add_argument("--seq-mib", type=int, default=16,
                   help="MiB per sequential workload, from the start of the image (default 16)")
    p.add_argument("--rand-ops", type=int, default=200,
                   help="4 KiB requests per random workload, anywhere in the image (default 200)")
    p.add_argument("--memory", type=int, default=256, help="guest MiB (default 256)")
    p.add_argument("--timeout", type=float, default=300, help="per-boot timeout in seconds (default 300)")
    p.add_argument("--qemu-cache", default="writeback,none",
                   help="QEMU -drive cache= modes to run, comma-separated (default writeback,none)")
    p.add_argument("--dir", help="where the scratch image goes (default: the bench cache)")
    p.add_argument("--kernel")
    p.add_argument("--initrd")
    p.add_argument("--hearth")
    p.add_argument("--from-json", help="only print the report of an earlier run's --json-out")
    p.add_argument("--md-out")
    p.add_argument("--json-out")
    return p.parse_args()


def workloads(image_bytes, seq_mib, rand_ops):
    """(mode, bytes, bs, ops): the first seq_mib MiB in 1 MiB requests, rand_ops random 4 KiB ones."""
    seq_ops = min(seq_mib, image_bytes // MIB)
    return [("seqread", image_bytes, MIB, seq_ops), ("randread", image_bytes, 4096, rand_ops),
            ("seqwrite", image_bytes, MIB, seq_ops), ("randwrite", image_bytes, 4096, rand_ops)]


def host_tool():
    """guest/tools/hearth-io.c built for the host exactly as guest/build.sh builds it (nolibc)."""
    src = B.repo_root() / "guest" / "tools" / "hearth-io.c"
    key = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    out = B.bench_cache_dir() / f"hearth-io-host-{key}"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["tar", "-C", tmp, "-xJf", LINUX_TARBALL, "linux-source-6.1/tools/include/nolibc"], check=True)
        nolibc = Path(tmp) / "linux-source-6.1" / "tools" / "include" / "nolibc" / "nolibc.h"
        subprocess.run(["gcc", "-Os", "-static", "-no-pie", "-nostdlib", "-fno-asynchronous-unwind-tables",
                        "-fno-stack-protector", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror", "-s",
                        "-include", str(nolibc), "-o", str(out) + ".tmp", str(src), "-lgcc"], check=True)
    os.replace(str(out) + ".tmp", out)
    return out


def parse_line(line):
    """{'mode':..., 'bs':..., 'ops':..., 'bytes':..., 'ns':...} from a hearth-io line, or None."""
    i = line.find("hearth-io: mode=")
    if i < 0:
        return None
    fields = dict(f.split("=", 1) for f in line[i + len("hearth-io: "):].split() if "=" in f)
    try:
        return dict(mode=fields["mode"], bs=int(fields["bs"]), ops=int(fields["ops"]),
                    bytes=int(fields["bytes"]), ns=int(fields["ns"]))
    except (KeyError, ValueError):
        return None


def run_host(tool, image, wl, buffered):
    res = {}
    for mode, nbytes, bs, ops in wl:
        cmd = [str(tool), mode, str(image), str(nbytes), str(bs), str(ops)] + (["buffered"] if buffered else [])
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        r = parse_line(out.stdout)
        if out.returncode != 0 or r is None:
            raise SystemExit(f"block: host `{' '.join(cmd)}` failed: {out.stdout.strip()} {out.stderr.strip()}")
        res[mode] = r
    return res, None


# QEMU microvm (acpi=off) appends `virtio_mmio.device=...` for its transports to the END of the
# kernel command line, i.e. after " -- ", where init hands it to the guest command instead of the
# kernel (and the module parameter is read-only at run time). So the QEMU runs name the transport
# before " -- " themselves: QEMU 7.2 puts the one virtio-blk-device on its transport 7 at
# 0xfeb00e00 (`info qtree`), IRQ 5 + 7 = 12 without the second IOAPIC (off with acpi=off) — the
# same string QEMU generates, seen on a guest console in this benchmark's first runs.
QEMU_BLK_MMIO = "virtio_mmio.device=512@0xfeb00e00:12"


def guest_script(wl):
    steps = [f"hearth-io {m} /dev/vda {n} {bs} {ops}" for m, n, bs, ops in wl]
    return " && ".join(steps) + " && echo io-done-$((6*7)) || { ls /sys/block; cat /proc/cmdline; }"


def run_guest(cmd, timeout):
    """Spawns a VMM, collects hearth-io lines from its console until the done marker, stops it."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    console = bytearray()
    try:
        while time.monotonic() - t0 < timeout:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            console += chunk
            if DONE in console or b"hearth-guest: exit status" in console:
                break
    finally:
        err = B.stop_and_collect(proc)
    text = console.decode("utf-8", "replace").replace("\r", "")
    res = {r["mode"]: r for r in map(parse_line, text.splitlines()) if r}
    if DONE not in console:
        tail = "\n".join(text.splitlines()[-14:])
        return None, f"no `{DONE.decode()}` within {timeout:.0f} s:\n{tail}\n{err[-1500:]}"
    return res, None


def rate(r):
    """MiB/s for 1 MiB requests, IOPS for 4 KiB ones."""
    s = r["ns"] / 1e9
    return r["bytes"] / MIB / s if r["bs"] >= MIB else r["ops"] / s


def fmt(x):
    return "—" if x is None else f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def report(a, session, results, failures, where):
    wl = workloads(a.image_mib * MIB, a.seq_mib, a.rand_ops)
    names = list(results)
    med = {name: {m: B.median([rate(r[m]) for r in rs if m in r]) for m, *_ in wl} for name, rs in results.items()}
    out = [session, "", f"1 vCPU, {a.memory} MiB guest; {a.image_mib} MiB raw image on the host's file system "
           f"({where}); medians of {a.runs} interleaved runs. MiB/s for {a.seq_mib} sequential 1 MiB requests "
           f"from the start of the image, IOPS for {a.rand_ops} random 4 KiB requests anywhere in it (queue "
           "depth 1, O_DIRECT in the guest; writes end with fsync).", "",
           "| workload | " + " | ".join(names) + " | hearth / QEMU (writeback) | hearth / host O_DIRECT |",
           "| --- |" + " ---: |" * (len(names) + 2)]
    for m, _, bs, _ in wl:
        unit = "MiB/s" if bs >= MIB else "IOPS"
        cells = [fmt(med[name][m]) for name in names]
        h, host = med["hearth"][m], med.get("host, O_DIRECT", {}).get(m)
        q = med.get("QEMU microvm, cache=writeback", {}).get(m)
        rq = f"**{h / q:.2f}**" if h and q else "—"
        rh = (f"1/{host / h:.0f}" if h < host / 100 else f"{h / host:.2f}") if h and host else "—"
        out.append(f"| {m} ({unit}) | " + " | ".join(cells) + f" | {rq} | {rh} |")
    out.append("")
    out.append("Every run (seqread/randread/seqwrite/randwrite): " + "; ".join(
        f"{name}: " + ", ".join("/".join(fmt(rate(r[m])) for m, *_ in wl if m in r) for r in rs)
        for name, rs in results.items()) + ".")
    if failures:
        out.append("")
        out.append("Failed runs:")
        out += ["```"] + [l for f in failures for l in f.splitlines()] + ["```"]
    return "\n".join(out)


def main():
    a = parse()
    if a.from_json:
        j = json.loads(Path(a.from_json).read_text())
        print(report(a, j["session"], j["results"], j["failures"], j["where"]))
        return
    B.require("qemu-system-x86_64")
    hearth = B.find_hearth(a.hearth)
    kernel, initrd = B.find_guest(a.kernel, a.initrd)
    patched, _ = B.patched_kernel(kernel)
    tool = host_tool()
    say = lambda s="": print(s, file=sys.stderr, flush=True)  # noqa: E731
    session = B.session_line()
    d = Path(a.dir) if a.dir else B.bench_cache_dir()
    image = d / f"block-bench-{os.getpid()}.img"
    nbytes = a.image_mib * MIB
    wl = workloads(nbytes, a.seq_mib, a.rand_ops)
    say(f"scratch image {image} ({a.image_mib} MiB), filling it ...")
    with open(image, "wb") as f:
        chunk = bytes(range(256)) * (MIB // 256)
        for i in range(a.image_mib):
            f.write(chunk[i % 251:] + chunk[: i % 251])
        f.flush()
        os.fsync(f.fileno())
    cmdline = B.guest_cmdline()
    script = guest_script(wl)
    guest_cmd = ("/bin/sh", "-c", f'"{script}"')
    hearth_cmd = [str(hearth), "run", "--kernel", str(patched), "--initrd", str(initrd), "--vcpus", "1",
                  "--memory", str(a.memory), "--cmdline", cmdline, "--timeout", str(int(a.timeout)),
                  "--drive", f"path={image}", "--", "/bin/sh", "-c", script]

    def qemu(cache):
        # acpi=off: QEMU microvm's ACPI is hardware-reduced, which takes the legacy PIC from
        # Linux, so the ISA IRQs of COM1 (not described in a DSDT the guest kernel can use)
        # stop working and the console loses user-space output; hearth's full-ACPI tables keep
        # the PIC (docs/guest.md). Without ACPI the guest finds the same legacy devices as under
        # hearth, and QEMU lists its virtio-mmio devices on the kernel command line.
        cmd = B.qemu_cmd(patched, initrd, 1, a.memory, f"{cmdline} {QEMU_BLK_MMIO}", guest_cmd)
        cmd[cmd.index("microvm")] = "microvm,acpi=off"
        return cmd + [
            "-drive", f"id=d0,file={image},format=raw,if=none,cache={cache},aio=threads",
            "-device", "virtio-blk-device,drive=d0"]

    configs = [
        ("hearth", lambda: run_guest(hearth_cmd, a.timeout)),
        *[(f"QEMU microvm, cache={c}", lambda c=c: run_guest(qemu(c), a.timeout))
          for c in a.qemu_cache.split(",") if c],
        ("host, O_DIRECT", lambda: run_host(tool, image, wl, False)),
        ("host, buffered", lambda: run_host(tool, image, wl, True)),
    ]
    results = {name: [] for name, _ in configs}
    failures = []
    try:
        for i in range(a.runs):
            for name, fn in configs[i % len(configs):] + configs[: i % len(configs)]:
                if not results[name] and any(f.split(": ", 1)[0].endswith(f", {name}") for f in failures):
                    continue  # failed its first run and has no result: do not spend boots on it
                say(f"run {i + 1}/{a.runs}: {name} ...")
                res, why = fn()
                if res is None:
                    failures.append(f"run {i + 1}, {name}: {why}")
                    say("    FAILED: " + why)
                    continue
                results[name].append(res)
                say("    " + ", ".join(f"{m} {fmt(rate(res[m]))}" for m, *_ in wl if m in res))
    finally:
        image.unlink(missing_ok=True)

    where = f"a {shutil.disk_usage(d).total // (1 << 30)} GiB volume holding `{d}`"
    text = report(a, session, results, failures, where)
    print(text)
    if a.md_out:
        Path(a.md_out).write_text(text + "\n")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(dict(session=session, where=where, results=results,
                                                   failures=failures), indent=1))


if __name__ == "__main__":
    main()

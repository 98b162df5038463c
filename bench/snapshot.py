#!/usr/bin/env python3
"""Snapshot benchmarks: snapshot create time and file sizes, restore latency, clones started per
second and memory per clone (PSS), for hearth; optionally QEMU's migrate-to-file on the same guest.

For each guest size (default 128 and 1024 MiB) one guest is booted with a shell loop that prints
`tick-N` about 20 times a second without forking (`read -t 0.05` on the console times out), so a
restored guest shows it runs within ~50 ms. Then:
  - snapshot: PATCH /vm Paused, PUT /snapshot/create timed by this script (request to reply);
    sizes of the state file and of the memory file (apparent and allocated: it is sparse);
  - restore latency, --runs times, one at a time, page cache warm: `hearth restore --stats` —
    (a) hearth's own "restored in X ms" (main() to the VM built, vCPUs not yet running),
    (b) hearth's "first KVM_RUN: X ms after start" (main() to the first KVM_RUN of a restored
        vCPU, i.e. the guest's first instruction after restore), and
    (c) this script's clock from spawn to the first `tick-` line on the console;
  - clones (128 MiB only): `hearth clone --count N --json` timed from spawn to its exit (all N
    answering their API with the VM running) -> clones/s; then, a few seconds later, each clone's
    PSS and RSS from /proc/PID/smaps_rollup, next to the RSS of the booted original.
QEMU (--with-qemu): the binary-patched kernel (benchlib; QEMU cannot boot the unpatched one on a
PVM host) with the same loop, `migrate "exec:cat > FILE"` over the HMP monitor (a running VM:
a paused source would leave the destination paused), then `-incoming "exec:cat FILE"` timed
from spawn to the first tick line. Prints markdown.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

LOOP = "i=0; while :; do i=$((i+1)); echo tick-$i; read -t 0.05 x; done"
FIRECRACKER_REF = ("Firecracker's documented target (docs/snapshotting/snapshot-support.md): snapshot resume "
                   "latency under 8 ms, p90 5 ms, 2 vCPU / 512 MiB / 1 block / 1 net, on AWS m5d.metal (VMX)")
FIRECRACKER_CREATE = ("Firecracker CI baselines (tests/integration_tests/performance/test_snapshot_perf.py, "
                      "x86_64): full snapshot create 180 ms for 2 vCPU / 256 MiB, 280 ms for 512 MiB")


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="restores per size (default 5)")
    p.add_argument("--sizes", default="128,1024", help="guest MiB, comma-separated (default 128,1024)")
    p.add_argument("--clones", type=int, default=10, help="clones started at once (default 10)")
    p.add_argument("--boot-timeout", type=float, default=600)
    p.add_argument("--with-qemu", action="store_true", help="also QEMU migrate-to-file / -incoming (128 MiB)")
    p.add_argument("--kernel")
    p.add_argument("--initrd")
    p.add_argument("--hearth")
    p.add_argument("--workdir", help="where snapshots go (default target/bench-snapshot)")
    p.add_argument("--md-out")
    p.add_argument("--json-out")
    return p.parse_args()


class Proc:
    """A child process whose stdout/stderr lines are collected with their time since spawn."""

    def __init__(self, cmd):
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out, self.err = [], []
        self.cv = threading.Condition()
        for stream, dest in ((self.p.stdout, self.out), (self.p.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, dest), daemon=True).start()

    def _read(self, stream, dest):
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self.cv:
                dest.append((time.monotonic() - self.t0, line))
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_line(self, pattern, timeout, stream="out"):
        """(seconds since spawn, match) of the first line matching `pattern`, or None."""
        rx = re.compile(pattern)
        dest = self.out if stream == "out" else self.err
        end = time.monotonic() + timeout
        i = 0
        with self.cv:
            while True:
                while i < len(dest):
                    m = rx.search(dest[i][1])
                    if m:
                        return dest[i][0], m
                    i += 1
                left = end - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and i >= len(dest)):
                    return None
                self.cv.wait(min(left, 0.2))

    def stderr_text(self):
        with self.cv:
            return "\n".join(l for _, l in self.err)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def http(sock, method, path, body=None, timeout=120):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(str(sock))
    data = body.encode() if body else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(data)}\r\n"
    if body:
        head += "Content-Type: application/json\r\n"
    s.sendall(head.encode() + b"\r\n" + data)
    resp = b""
    while b"\r\n\r\n" not in resp:
        chunk = s.recv(65536)
        if not chunk:
            break
        resp += chunk
    hdr, _, rest = resp.partition(b"\r\n\r\n")
    m = re.search(rb"content-length:\s*(\d+)", hdr, re.I)
    n = int(m.group(1)) if m else 0
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    s.close()
    return int(hdr.split()[1]), rest.decode("utf-8", "replace")


def wait_socket(path, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if Path(path).exists():
            return True
        time.sleep(0.02)
    return False


def kib(path, key):
    return B.read_kib(path, key)


def median(xs):
    xs = [x for x in xs if x is not None]
    return B.median(xs) if xs else None


def fmt(x, nd=1):
    return "—" if x is None else f"{x:.{nd}f}"


def hearth_snapshot(hearth, kernel, initrd, mem, work, boot_timeout):
    """Boots a `mem` MiB guest, snapshots it while paused; returns a dict of results."""
    sock, state, memf = work / f"orig-{mem}.sock", work / f"vm-{mem}.state", work / f"vm-{mem}.mem"
    vm = Proc([str(hearth), "run", "--kernel", str(kernel), "--initrd", str(initrd), "--memory", str(mem),
               "--timeout", str(boot_timeout + 120), "--api-sock", str(sock), "--", "/bin/sh", "-c", LOOP])
    try:
        if vm.wait_line(r"^tick-20$", boot_timeout) is None:
            raise SystemExit(f"bench: the {mem} MiB guest did not print tick-20 within {boot_timeout} s:\n{vm.stderr_text()}")
        rss = kib(f"/proc/{vm.p.pid}/status", "VmRSS")
        code, body = http(sock, "PATCH", "/vm", '{"state": "Paused"}')
        assert code == 204, body
        t = time.monotonic()
        code, body = http(sock, "PUT", "/snapshot/create",
                          json.dumps({"snapshot_path": str(state), "mem_file_path": str(memf)}))
        create_ms = (time.monotonic() - t) * 1e3
        if code != 204:
            raise SystemExit(f"bench: snapshot create failed: {code} {body}")
        last_tick = max(int(l[5:]) for _, l in vm.out if l.startswith("tick-"))
    finally:
        vm.stop()
    st = memf.stat()
    return dict(mem=mem, create_ms=create_ms, state_bytes=state.stat().st_size, mem_bytes=st.st_size,
                mem_alloc=st.st_blocks * 512, orig_rss_kib=rss, state=state, memf=memf, last_tick=last_tick)


def hearth_restores(hearth, snap, runs):
    rows = []
    for _ in range(runs):
        p = Proc([str(hearth), "restore", "--snapshot", str(snap["state"]), "--mem", str(snap["memf"]),
                  "--stats", "--timeout", "1.5"])
        tick = p.wait_line(r"^tick-(\d+)$", 30)
        fifth = tick and p.wait_line(rf"^tick-{int(tick[1].group(1)) + 4}$", 30)
        p.p.wait(timeout=60)
        err = p.stderr_text()
        m1 = re.search(r"restored .* in ([0-9.]+) ms", err)
        m2 = re.search(r"first KVM_RUN: ([0-9.]+) ms after start", err)
        cont = tick is not None and int(tick[1].group(1)) == snap["last_tick"] + 1
        rows.append(dict(restored_ms=float(m1.group(1)) if m1 else None,
                         first_run_ms=float(m2.group(1)) if m2 else None,
                         first_tick_ms=tick[0] * 1e3 if tick else None, continued=cont,
                         four_ticks_ms=(fifth[0] - tick[0]) * 1e3 if fifth else None,
                         stats="\n".join(l for l in err.splitlines() if not l.startswith("hearth: restored"))))
    return rows


def hearth_clones(hearth, snap, n, work):
    d = work / "clones"
    d.mkdir(exist_ok=True)
    t = time.monotonic()
    out = subprocess.run([str(hearth), "clone", "--snapshot", str(snap["state"]), "--mem", str(snap["memf"]),
                          "--count", str(n), "--api-sock-dir", str(d), "--json", "--timeout", "120"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall = time.monotonic() - t
    if out.returncode != 0:
        raise SystemExit(f"bench: hearth clone failed: {out.stderr}")
    rep = json.loads(out.stdout)
    pids = [c["pid"] for c in rep["clones"]]
    try:
        # Measure once every clone's guest has printed a tick after its restore (it ran its loop,
        # timers and console), plus 2 s.
        logs = [Path(c["console_log"]) for c in rep["clones"]]
        end = time.monotonic() + 300
        while time.monotonic() < end and not all(re.search(r"^tick-\d+", l.read_text(), re.M) for l in logs):
            time.sleep(0.1)
        all_ticking_s = time.monotonic() - t
        time.sleep(2)
        pss = [kib(f"/proc/{p}/smaps_rollup", "Pss") for p in pids]
        rss = [kib(f"/proc/{p}/smaps_rollup", "Rss") for p in pids]
        ran = sum(1 for c in rep["clones"] if re.search(r"^tick-\d+", Path(c["console_log"]).read_text(), re.M))
    finally:
        for p in pids:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
        end = time.monotonic() + 15
        while time.monotonic() < end and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.05)
    return dict(n=n, wall_s=wall, hearth_ms=rep["elapsed_ms"], pss_kib=pss, rss_kib=rss, ran=ran,
                all_ticking_s=all_ticking_s)


class Hmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(30)
        self.s.connect(str(path))
        self.read_until(b"(qemu)")

    def read_until(self, token):
        buf = b""
        while token not in buf:
            chunk = self.s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf.decode("utf-8", "replace")

    def cmd(self, c):
        self.s.sendall(c.encode() + b"\n")
        return self.read_until(b"(qemu)")


def qemu_run(kernel, initrd, work, runs, boot_timeout):
    patched = B.patched_kernel(kernel)[0]
    cmdline = B.guest_cmdline()
    base = B.qemu_cmd(patched, initrd, 1, 128, cmdline, guest_cmd=["/bin/sh", "-c", f'"{LOOP}"'])
    mon, state = work / "qemu.mon", work / "qemu-128.migrate"
    vm = Proc(base + ["-monitor", f"unix:{mon},server,nowait"])
    try:
        if vm.wait_line(r"^tick-20$", boot_timeout) is None:
            return dict(error=f"QEMU guest did not print tick-20 within {boot_timeout} s: {vm.stderr_text()[-400:]}")
        wait_socket(mon)
        h = Hmp(mon)
        rss = kib(f"/proc/{vm.p.pid}/status", "VmRSS")
        h.cmd("migrate_set_parameter max-bandwidth 100G")  # QEMU's default cap would time the cap
        t = time.monotonic()
        h.cmd(f'migrate "exec:cat > {state}"')
        while "Migration status: completed" not in h.cmd("info migrate"):
            if time.monotonic() - t > 300:
                return dict(error="QEMU migration did not complete within 300 s")
            time.sleep(0.01)
        save_ms = (time.monotonic() - t) * 1e3
        h.cmd("quit")
    finally:
        vm.stop()
    rows = []
    for _ in range(runs):
        p = Proc(base + ["-incoming", f"exec:cat {state}"])
        tick = p.wait_line(r"^tick-(\d+)$", 60)
        p.stop()
        rows.append(tick[0] * 1e3 if tick else None)
    return dict(save_ms=save_ms, state_bytes=state.stat().st_size, orig_rss_kib=rss, first_tick_ms=rows)


def main():
    a = parse()
    hearth = B.find_hearth(a.hearth)
    kernel, initrd = B.find_guest(a.kernel, a.initrd)
    work = Path(a.workdir) if a.workdir else B.repo_root() / "target" / "bench-snapshot"
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in a.sizes.split(",") if s]
    commit = subprocess.run(["git", "-C", str(B.repo_root()), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    res = dict(sizes=[], clones=None, qemu=None,
               session=f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, hearth {commit or '?'}, "
                       f"load average at start {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    for mem in sizes:
        print(f"[snapshot] {mem} MiB: boot, snapshot", file=sys.stderr)
        snap = hearth_snapshot(hearth, kernel, initrd, mem, work, a.boot_timeout)
        print(f"[snapshot] {mem} MiB: {a.runs} restores", file=sys.stderr)
        snap["restores"] = hearth_restores(hearth, snap, a.runs)
        if mem == min(sizes) and a.clones > 0:
            print(f"[snapshot] {mem} MiB: {a.clones} clones", file=sys.stderr)
            res["clones"] = dict(mem=mem, orig_rss_kib=snap["orig_rss_kib"], **hearth_clones(hearth, snap, a.clones, work))
        res["sizes"].append({k: (str(v) if isinstance(v, Path) else v) for k, v in snap.items()})
        for f in (snap["state"], snap["memf"]):
            f.unlink()
    if a.with_qemu:
        print("[snapshot] QEMU migrate-to-file", file=sys.stderr)
        res["qemu"] = qemu_run(kernel, initrd, work, a.runs, a.boot_timeout)
    md = render(res, a)
    print(md)
    if a.md_out:
        Path(a.md_out).write_text(md + "\n")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(res, indent=1))


def render(res, a):
    L = [f"Session: {res['session']} (the host is shared: other engineers' VMs ran at the same time).", "",
         f"1 vCPU; restores run one at a time with the memory file in the page cache; medians of {a.runs} runs "
         "(every run listed). Guest: the default guest's shell printing `tick-N` every ~50 ms.", ""]
    L += ["| guest RAM | snapshot create (PUT, ms) | state file | memory file (apparent / allocated) | "
          "restored, hearth (ms) | first KVM_RUN after start (ms) | first console line after spawn (ms) | "
          "next 4 ticks (ms) | count continued |",
          "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s in res["sizes"]:
        r = s["restores"]
        col = lambda k: f"{fmt(median([x[k] for x in r]))} ({', '.join(fmt(x[k]) for x in r)})"  # noqa: E731
        L.append(f"| {s['mem']} MiB | {s['create_ms']:.0f} | {s['state_bytes'] / 1024:.1f} KiB | "
                 f"{s['mem_bytes'] >> 20} MiB / {s['mem_alloc'] / 1048576:.1f} MiB | {col('restored_ms')} | "
                 f"{col('first_run_ms')} | {col('first_tick_ms')} | {fmt(median([x['four_ticks_ms'] for x in r]), 0)} | "
                 f"{sum(x['continued'] for x in r)}/{len(r)} |")
    if res["sizes"] and res["sizes"][0]["restores"]:
        s0 = res["sizes"][0]
        L += ["", f"`hearth restore --stats` of the first {s0['mem']} MiB run (exits during its 1.5 s):", "", "```",
              s0["restores"][0]["stats"].strip(), "```"]
    c = res["clones"]
    if c:
        pss = [p for p in c["pss_kib"] if p is not None]
        orig = c["orig_rss_kib"]
        L += ["", f"`hearth clone --count {c['n']}` ({c['mem']} MiB guests, all started at once, ready = API answers "
              f"with the VM running): {c['hearth_ms']:.0f} ms for all {c['n']} "
              f"(**{c['n'] / (c['hearth_ms'] / 1e3):.1f} clones/s**; command wall time {c['wall_s'] * 1e3:.0f} ms); "
              f"{c['ran']}/{c['n']} consoles show the guest's loop running, the last {c['all_ticking_s']:.1f} s after "
              "`hearth clone` was spawned (all guests warming up at once on 2 shared cores).",
              "",
              "| memory | per clone (median) | all clones | vs the booted original's RSS × N |",
              "| --- | ---: | ---: | ---: |",
              f"| PSS (smaps_rollup), 2 s after every clone printed a tick | {median(pss) / 1024:.1f} MiB | {sum(pss) / 1024:.1f} MiB | "
              f"{sum(pss) / (orig * c['n']):.2f} |",
              f"| RSS (counts shared pages in every clone) | {median(c['rss_kib']) / 1024:.1f} MiB | "
              f"{sum(c['rss_kib']) / 1024:.1f} MiB | {sum(c['rss_kib']) / (orig * c['n']):.2f} |",
              f"| the booted original (RSS, before the snapshot) | {orig / 1024:.1f} MiB | — | — |"]
    q = res["qemu"]
    L += [""]
    if q is None:
        L.append("QEMU: not run in this session (`bench/snapshot.py --with-qemu`).")
    elif "error" in q:
        L.append(f"QEMU: {q['error']}")
    else:
        h = next((s for s in res["sizes"] if s["mem"] == 128), None)
        hq = median(q["first_tick_ms"])
        hh = median([x["first_tick_ms"] for x in h["restores"]]) if h else None
        L += ["| 128 MiB, same guest loop | save | saved file | restore: spawn → first console line (ms) |",
              "| --- | ---: | ---: | ---: |",
              f"| hearth (snapshot/create; restore) | {fmt(h['create_ms'] if h else None, 0)} ms | "
              f"{(h['state_bytes'] + h['mem_alloc']) / 1048576:.1f} MiB allocated | {fmt(hh)} |" if h else "",
              f"| QEMU 7.2 microvm (migrate exec:cat > file; -incoming) | {q['save_ms']:.0f} ms | "
              f"{q['state_bytes'] / 1048576:.1f} MiB | {fmt(hq)} ({', '.join(fmt(x) for x in q['first_tick_ms'])}) |",
              "", f"Restore, hearth / QEMU: **{hh / hq:.3f}**; save: {h['create_ms'] / q['save_ms']:.2f}."
              if h and hh and hq else ""]
    L += ["", f"Reference, not measured here: {FIRECRACKER_REF}; {FIRECRACKER_CREATE}."]
    return "\n".join(L)


if __name__ == "__main__":
    main()

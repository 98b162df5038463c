#!/usr/bin/env python3
"""Network throughput and latency, hearth vs QEMU microvm, each with a virtio-net device on the
same host tap, the same guest program (/bin/hearth-net, guest/tools/hearth-net.c: 256 KiB
read()/write() calls) and the same kernel (the patched copy QEMU can boot, see
benchlib.plan_patches), initrd, vCPUs, memory and command line. QEMU: `-netdev tap` (vnet_hdr on,
offloads negotiated by its virtio-net, no vhost-net on this host) and `-device virtio-net-device`.

Everything runs in a network namespace of its own (hbenchns: the tap, the VMMs, this script's
sockets), so nothing touches the host's own network. Per VMM one boot does `--rounds` rounds of:
request/response latency (1 and 64 bytes, the host echoes), host -> guest and guest -> host bulk
TCP. Transfers are timed by the guest (connect to end of file) and checksummed on both sides
(FNV-1a 64); the report gives the median of the rounds. VMs run one at a time. Needs root
(creates the tap hbench0). Prints markdown.
"""

import argparse
import ctypes
import hashlib
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

NETNS = "hbenchns"
TAP = "hbench0"
HOST_IP = "172.31.78.1"
GUEST_IP = "172.31.78.2"
DONE = b"netbench: 42"
# QEMU microvm: acpi=off (with ACPI the guest's console loses user-space output), and its
# virtio-mmio transport named before " -- " (QEMU appends it after, where init would hand it to
# the guest command): the one virtio device sits on transport 7, as in bench/block.py.
QEMU_NET_MMIO = "virtio_mmio.device=512@0xfeb00e00:12"  # printed by $((40+2)): the command line itself must not contain it


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds per boot, the median is reported (default 3)")
    p.add_argument("--kib", type=int, default=1024, help="KiB moved each way per round (default 1024)")
    p.add_argument("--pings", type=int, default=100, help="round trips per latency run (default 100)")
    p.add_argument("--memory", type=int, default=256, help="guest MiB (default 256)")
    p.add_argument("--timeout", type=float, default=600, help="per-boot timeout in seconds (default 600)")
    p.add_argument("--kernel")
    p.add_argument("--initrd")
    p.add_argument("--hearth")
    p.add_argument("--md-out", help="also write the markdown report here")
    return p.parse_args()


def ip(*args, check=True):
    subprocess.run(["ip", *args], check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def enter_netns():
    """Makes a fresh namespace and moves this process (so its sockets and children) into it."""
    ip("netns", "del", NETNS, check=False)
    ip("netns", "add", NETNS)
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/var/run/netns/{NETNS}") as f:
        if libc.setns(f.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
            raise SystemExit(f"bench/net.py: setns: {os.strerror(ctypes.get_errno())}")
    ip("link", "set", "lo", "up")


def tap_up():
    ip("tuntap", "add", "dev", TAP, "mode", "tap")
    ip("addr", "add", f"{HOST_IP}/24", "dev", TAP)
    ip("link", "set", TAP, "up")


def netns_down():
    ip("netns", "del", NETNS, check=False)


def payload(n):
    """n bytes that do not compress (SHA-256 in counter mode)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(i.to_bytes(8, "little")).digest() * 64
        i += 1
    return bytes(out[:n])


FNV_OFFSET, FNV_PRIME, MASK = 0xcbf29ce484222325, 0x100000001b3, (1 << 64) - 1


def fnv(data, h=FNV_OFFSET):
    """64-bit FNV-1a, as hearth-net prints it."""
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


def pattern(n):
    """What `hearth-net send` sends: byte i is (i * 2654435761 mod 2^32) >> 24."""
    return bytes(((i * 2654435761) & 0xffffffff) >> 24 for i in range(n))


class Server(threading.Thread):
    """Serves every connection of one listener with `fn(conn)` until the listener closes."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.listener = socket.create_server((HOST_IP, 0))
        self.port = self.listener.getsockname()[1]
        self.fn, self.results = fn, []

    def run(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.settimeout(300)
            try:
                self.results.append(self.fn(conn))
            except OSError as e:
                self.results.append(("error", str(e)))
            conn.close()


def serve_down(data):
    def fn(conn):
        conn.sendall(data)  # closing ends the guest's `hearth-net recv`
    return fn


def serve_up(conn):
    """Reads to end of file; closing then tells the guest everything arrived."""
    h, n = FNV_OFFSET, 0
    while True:
        b = conn.recv(1 << 18)
        if not b:
            return (n, h)
        h = fnv(b, h)
        n += len(b)


def serve_echo(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        b = conn.recv(65536)
        if not b:
            return None
        conn.sendall(b)


def guest_script(rounds, nbytes, pings, down_port, up_port, echo_port):
    # No double quotes: the kernel command line carries it to init inside "...".
    loop = " ".join(str(i) for i in range(rounds))
    return (f"ifconfig eth0 {GUEST_IP} netmask 255.255.255.0 up && "
            f"echo features=$(cat /sys/class/net/eth0/device/features); "
            f"for i in {loop}; do "
            f"hearth-net ping {HOST_IP} {echo_port} {pings} 1; "
            f"hearth-net ping {HOST_IP} {echo_port} {pings} 64; "
            f"hearth-net recv {HOST_IP} {down_port}; "
            f"hearth-net send {HOST_IP} {up_port} {nbytes}; "
            "done; echo netbench: $((40+2))")


def run_once(cmd, timeout, data, rounds, pings):
    """Boots one VM that does `rounds` rounds of ping/download/upload; returns what it measured."""
    servers = [Server(serve_down(data)), Server(serve_up), Server(serve_echo)]
    for s in servers:
        s.start()
    down, up, echo = servers
    full = cmd(guest_script(rounds, len(data), pings, down.port, up.port, echo.port))
    proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    console, err = bytearray(), bytearray()
    fds = {proc.stdout.fileno(): console, proc.stderr.fileno(): err}
    limit = time.monotonic() + timeout
    while fds and DONE not in console and time.monotonic() < limit:
        ready, _, _ = select.select(list(fds), [], [], 0.5)
        for fd in ready:
            b = os.read(fd, 65536)
            if not b:
                del fds[fd]
            else:
                fds[fd] += b
    B._stop(proc)
    for s in servers:
        s.listener.close()
    text = console.decode("utf-8", "replace").replace("\r", "")
    want_down, want_up = fnv(data), fnv(pattern(len(data)))
    res = dict(down=[], up=[], ping1=[], ping64=[], bad=[])
    for m in re.finditer(r"hearth-net: (recv|send) len=(\d+) ns=(\d+) fnv=([0-9a-f]+)", text):
        kind, n, ns, h = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4), 16)
        want = want_down if kind == "recv" else want_up
        if n != len(data) or h != want:
            res["bad"].append(m.group(0))
            continue
        res["down" if kind == "recv" else "up"].append(ns / 1e9)
    for m in re.finditer(r"hearth-net: ping count=\d+ size=(\d+) mean_us=(\d+) p50_us=(\d+)", text):
        res["ping" + m.group(1)].append((int(m.group(2)), int(m.group(3))))
    # What the host received must match what the guest says it sent.
    res["bad"] += [str(r) for r in up.results if r != (len(data), want_up)]
    feat = re.search(r"features=([01]+)", text)
    res.update(
        ok=DONE in console and not res["bad"] and len(res["down"]) == rounds and len(res["up"]) == rounds,
        features=feat.group(1) if feat else None,
        tail=B.console_tail(type("R", (), {"console": bytes(console)})(), 6),
        stderr=err.decode("utf-8", "replace")[-2000:],
    )
    return res


OFFLOAD_BITS = [(0, "CSUM"), (1, "GUEST_CSUM"), (7, "GUEST_TSO4"), (11, "HOST_TSO4"), (15, "MRG_RXBUF")]


def offloads(features):
    if not features:
        return "?"
    return " ".join(n for b, n in OFFLOAD_BITS if len(features) > b and features[b] == "1") or "none"


def main():
    a = parse()
    if os.geteuid() != 0:
        raise SystemExit("bench/net.py: must run as root (it creates the tap hbench0)")
    B.require("qemu-system-x86_64")
    hearth = B.find_hearth(a.hearth)
    kernel, initrd = B.find_guest(a.kernel, a.initrd)
    patched, _ = B.patched_kernel(kernel)
    cmdline = B.guest_cmdline()
    data = payload(a.kib << 10)
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731

    def hearth_cmd(script):
        c = B.hearth_cmd(hearth, patched, initrd, 1, a.memory, cmdline, int(a.timeout),
                         guest_cmd=("/bin/sh", "-c", script))
        # This hearth takes --log-level as an option of `run`, not before it.
        c = [x for x in c if x not in ("--log-level", "info")]
        i = c.index("--")
        return c[:i] + ["--net", f"tap={TAP}"] + c[i:]

    def qemu_cmd(script):
        c = B.qemu_cmd(patched, initrd, 1, a.memory, f"{cmdline} {QEMU_NET_MMIO}",
                       guest_cmd=("/bin/sh", "-c", f'"{script}"'))
        c[c.index("microvm")] = "microvm,acpi=off"
        return c + ["-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
                    "-device", "virtio-net-device,netdev=n0"]

    vmms = [("hearth", hearth_cmd), ("QEMU microvm", qemu_cmd)]
    results = {}
    session = B.session_line()
    enter_netns()
    try:
        tap_up()
        for name, cmd in vmms:
            say(f"{name}: one boot, {a.rounds} rounds ...")
            r = run_once(cmd, a.timeout, data, a.rounds, a.pings)
            say(f"    ok {r['ok']}, down s {r['down']}, up s {r['up']}, ping1 {r['ping1']}, ping64 {r['ping64']}")
            if not r["ok"]:
                say("    bad: " + " | ".join(r["bad"]))
                say("    console tail: " + " | ".join(r["tail"]))
                say("    stderr tail: " + r["stderr"][-500:])
            results[name] = r
    finally:
        netns_down()

    kib = a.kib
    fmt = lambda x, d=1: "—" if x is None else f"{x:.{d}f}"  # noqa: E731
    ratio = lambda x, y: (f"{x / y:.2f}" if x and y else "—")  # noqa: E731

    def rate(name, key):
        s = B.median(results[name][key])
        return kib / s if s else None

    def lat(name, key, i):
        return B.median([p[i] / 1000 for p in results[name][key]])

    q = "QEMU microvm"
    out = [session, "",
           f"TCP over a host tap with the guest's hearth-net (256 KiB read/write calls, checksummed on both "
           f"sides): {kib} KiB host → guest and {kib} KiB guest → host (guest-timed, connect to end of file), "
           f"and {a.pings} request/response round trips of 1 and 64 bytes (TCP_NODELAY, host echoes); "
           f"1 vCPU, {a.memory} MiB, the patched kernel, one boot per VMM doing {a.rounds} rounds, median of "
           f"the rounds.", "",
           "| VMM | offloads acked | host → guest KiB/s | vs QEMU | guest → host KiB/s | vs QEMU "
           "| RTT 1 B p50 ms | vs QEMU | RTT 64 B p50 ms (mean) | vs QEMU |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, _ in vmms:
        r = results[name]
        d, u = rate(name, "down"), rate(name, "up")
        p1, p64, m64 = lat(name, "ping1", 1), lat(name, "ping64", 1), lat(name, "ping64", 0)
        out.append(f"| {name} ({'ok' if r['ok'] else 'FAILED'}) | {offloads(r['features'])} | {fmt(d)} "
                   f"| {ratio(d, rate(q, 'down'))} | {fmt(u)} | {ratio(u, rate(q, 'up'))} | {fmt(p1)} "
                   f"| {ratio(p1, lat(q, 'ping1', 1))} | {fmt(p64)} ({fmt(m64)}) | {ratio(p64, lat(q, 'ping64', 1))} |")
    out += ["", "Ratios: throughput hearth / QEMU (above 1: hearth moves more), latency hearth / QEMU (below 1: "
            "hearth answers sooner)."]
    text = "\n".join(out)
    print(text)
    if a.md_out:
        Path(a.md_out).write_text(text + "\n")


if __name__ == "__main__":
    main()

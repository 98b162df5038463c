#!/usr/bin/env python3
"""Network throughput and latency, hearth vs QEMU microvm, each with a virtio-net device on the
same host tap: TCP guest -> host and host -> guest (busybox nc in the guest, a socket in this
script), and ping round trips guest -> host. Same kernel (the patched copy QEMU can boot, see
benchlib.plan_patches), initrd, vCPUs, memory and command line. QEMU: `-netdev tap` (vnet_hdr on,
offloads negotiated by its virtio-net, no vhost-net on this host) and `-device virtio-net-device`.

Everything runs in a network namespace of its own (hbenchns: the tap, the VMMs, this script's
sockets), so nothing touches the host's own network. On a PVM host the guest kernel manages a
few dozen packets (and nc writes) per second, hence the small default size.

Per VMM one boot does everything: ping, download, upload (the guest sends back what it got).
Throughput is timed on the host: from accepting the connection to the last byte in (upload), or
to the guest closing after the last byte (download). Needs root (creates the tap hbench0).
VMs run one at a time; the order alternates between rounds. Prints markdown.
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
DONE = b"netbench: 42"  # printed by $((40+2)): the command line itself must not contain it


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1, help="boots per VMM (default 1)")
    p.add_argument("--mib", type=int, default=1, help="MiB moved each way (default 1)")
    p.add_argument("--pings", type=int, default=20, help="ping round trips (default 20)")
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


class Transfer(threading.Thread):
    """One accepted connection: `send` bytes (then wait for the peer to close), or receive
    `expect` bytes (busybox nc does not close at the end of its input: the host closes)."""

    def __init__(self, listener, send=None, expect=0):
        super().__init__(daemon=True)
        self.listener, self.send, self.expect = listener, send, expect
        self.seconds, self.nbytes, self.digest, self.error = None, 0, None, None

    def run(self):
        try:
            self.listener.settimeout(None)
            conn, _ = self.listener.accept()
            conn.settimeout(300)
            t0 = time.monotonic()
            h = hashlib.sha256()
            if self.send is not None:
                conn.sendall(self.send)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):
                    pass
                self.nbytes = len(self.send)
            else:
                while self.nbytes < self.expect:
                    b = conn.recv(1 << 20)
                    if not b:
                        break
                    h.update(b)
                    self.nbytes += len(b)
                self.digest = h.hexdigest()
            self.seconds = time.monotonic() - t0
            conn.close()
        except OSError as e:
            self.error = str(e)


def guest_script(down_port, up_port, pings):
    # No double quotes: the kernel command line carries it to init inside "...".
    return (f"ifconfig eth0 {GUEST_IP} netmask 255.255.255.0 up && "
            f"echo features=$(cat /sys/class/net/eth0/device/features); "
            f"ping -c {pings} -i 0.2 {HOST_IP}; "
            f"nc {HOST_IP} {down_port} </dev/null >/tmp/d; "
            f"nc {HOST_IP} {up_port} </tmp/d; "
            "echo netbench: $((40+2))")


def run_once(cmd, timeout, data):
    """Boots one VM with the listeners ready; returns a dict of what it measured."""
    down = socket.create_server((HOST_IP, 0))
    up = socket.create_server((HOST_IP, 0))
    dp, upp = down.getsockname()[1], up.getsockname()[1]
    tx, rx = Transfer(down, send=data), Transfer(up, expect=len(data))
    tx.start()
    rx.start()
    full = cmd(dp, upp)
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
    # Unblock listeners the guest never reached.
    for s in (down, up):
        try:
            socket.create_connection(s.getsockname(), timeout=1).close()
        except OSError:
            pass
    tx.join(10)
    rx.join(10)
    down.close()
    up.close()
    text = console.decode("utf-8", "replace")
    rtt = re.search(r"min/avg/max = ([\d.]+)/([\d.]+)/([\d.]+) ms", text)
    loss = re.search(r"(\d+)% packet loss", text)
    feat = re.search(r"features=([01]+)", text)
    ok = DONE in console and rx.digest == hashlib.sha256(data).hexdigest() and rx.nbytes == len(data)
    return dict(
        ok=ok,
        down_s=tx.seconds if ok else None,
        up_s=rx.seconds if ok else None,
        rtt=tuple(float(x) for x in rtt.groups()) if rtt else None,
        loss=int(loss.group(1)) if loss else None,
        features=feat.group(1) if feat else None,
        tail=B.console_tail(type("R", (), {"console": bytes(console)})(), 6),
        stderr=err.decode("utf-8", "replace")[-2000:],
    )


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
    data = payload(a.mib << 20)
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731

    def hearth_cmd(dp, upp):
        c = B.hearth_cmd(hearth, patched, initrd, 1, a.memory, cmdline, int(a.timeout),
                         guest_cmd=("/bin/sh", "-c", guest_script(dp, upp, a.pings)))
        # This hearth takes --log-level as an option of `run`, not before it.
        c = [x for x in c if x not in ("--log-level", "info")]
        i = c.index("--")
        return c[:i] + ["--net", f"tap={TAP}"] + c[i:]

    def qemu_cmd(dp, upp):
        script = '"' + guest_script(dp, upp, a.pings) + '"'
        return B.qemu_cmd(patched, initrd, 1, a.memory, cmdline, guest_cmd=("/bin/sh", "-c", script)) + [
            "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
            "-device", "virtio-net-device,netdev=n0"]

    vmms = [("hearth", hearth_cmd), ("QEMU microvm", qemu_cmd)]
    results = {name: [] for name, _ in vmms}
    enter_netns()
    try:
        tap_up()
        for i in range(a.runs):
            for name, cmd in (vmms if i % 2 == 0 else vmms[::-1]):
                say(f"run {i + 1}/{a.runs}: {name} ...")
                r = run_once(cmd, a.timeout, data)
                say(f"    ok {r['ok']}, down {B.fmt_s(r['down_s'])} s, up {B.fmt_s(r['up_s'])} s, rtt {r['rtt']}")
                if not r["ok"]:
                    say("    console tail: " + " | ".join(r["tail"]))
                    say("    stderr tail: " + r["stderr"][-500:])
                results[name].append(r)
    finally:
        netns_down()

    mib = a.mib
    rate = lambda s: (mib / s) if s else None  # noqa: E731

    def med(name, key):
        return B.median([r[key] for r in results[name] if r[key] is not None])

    def med_rtt(name, i):
        return B.median([r["rtt"][i] for r in results[name] if r["rtt"]])

    q = {k: med("QEMU microvm", k) for k in ("down_s", "up_s")}
    q_rtt = med_rtt("QEMU microvm", 1)
    out = [f"TCP over a host tap, {mib} MiB each way (host times it; busybox nc in the guest), then "
           f"{a.pings} pings guest -> host (busybox ping, 0.2 s apart); 1 vCPU, {a.memory} MiB, the patched "
           f"kernel, {a.runs} boot(s) per VMM, median.", "",
           "| VMM | offloads the driver acked | host → guest MiB/s | vs QEMU | guest → host MiB/s | vs QEMU "
           "| ping avg ms (min–max) | vs QEMU |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, _ in vmms:
        d, u = med(name, "down_s"), med(name, "up_s")
        avg, lo, hi = med_rtt(name, 1), med_rtt(name, 0), med_rtt(name, 2)
        feats = offloads(next((r["features"] for r in results[name] if r["features"]), None))
        ratio = lambda x, y: (f"{x / y:.2f}" if x and y else "—")  # noqa: E731
        ok = sum(r["ok"] for r in results[name])
        fmt = lambda x: "—" if x is None else f"{x:.2f}"  # noqa: E731
        out.append(f"| {name} ({ok}/{len(results[name])} ok) | {feats} | {fmt(rate(d))} | {ratio(rate(d), rate(q['down_s']))} "
                   f"| {fmt(rate(u))} | {ratio(rate(u), rate(q['up_s']))} | {fmt(avg)} ({fmt(lo)}–{fmt(hi)}) "
                   f"| {ratio(avg, q_rtt)} |")
    out += ["", "Ratios: throughput hearth / QEMU (above 1: hearth moves more), ping hearth / QEMU (below 1: "
            "hearth answers sooner)."]
    text = "\n".join(out)
    print(text)
    if a.md_out:
        Path(a.md_out).write_text(text + "\n")


if __name__ == "__main__":
    main()

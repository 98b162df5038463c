#!/usr/bin/env python3
"""vsock throughput through hearth's virtio-vsock, both directions, against the host's own Unix
socket throughput as a reference line (QEMU's vhost-vsock needs /dev/vhost-vsock; the script
records whether this host has it).

One hearth boot per run (1 vCPU, 256 MiB, the default guest, `--vsock cid=3,uds=SOCK`):

- guest -> host: the guest runs `/bin/hearth-vsock send 2 6000 BYTES` --transfers times, one
  after the other; this script listens on `SOCK_6000` (hearth's hybrid scheme, docs/vsock.md),
  reads each connection to end of file and answers `len=N`. Time: accept -> end of file.
- host -> guest: the guest then runs `/bin/hearth-vsock listen 5000 N`; this script connects to
  SOCK, sends `CONNECT 5000`, and after `OK` writes BYTES, shuts down writing and waits for the
  guest's `len=N fnv=...` reply. Time: `OK` -> reply.
- host UDS reference: the same Python code on both ends of a Unix socket pair on the host, no VM.

The guest side generates (send) or hashes (listen) every byte in a simple loop, which is part of
its cost. Prints markdown: MiB/s, medians over all transfers.
"""

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

MIB = 1 << 20
CHUNK = 256 * 1024
DONE = b"vs-done-42"


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="hearth boots (default 3)")
    p.add_argument("--transfers", type=int, default=3, help="transfers per direction per boot (default 3)")
    p.add_argument("--mib", type=int, default=2, help="MiB per transfer (default 2; ~0.3 MiB/s on a PVM host)")
    p.add_argument("--timeout", type=float, default=400, help="per-boot timeout in seconds (default 400)")
    p.add_argument("--kernel")
    p.add_argument("--initrd")
    p.add_argument("--hearth")
    p.add_argument("--md-out")
    p.add_argument("--json-out")
    return p.parse_args()


def drain(conn):
    """Reads `conn` to end of file; the byte count."""
    n = 0
    while True:
        b = conn.recv(CHUNK)
        if not b:
            return n
        n += len(b)


def send_all(conn, nbytes, payload):
    left = nbytes
    while left > 0:
        k = min(left, len(payload))
        conn.sendall(payload[:k] if k < len(payload) else payload)
        left -= k


def guest_to_host_server(path, count, results, errors):
    """Accepts `count` connections on `path` one at a time: (bytes, seconds) each."""
    try:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(4)
        srv.settimeout(600)
        for _ in range(count):
            conn, _ = srv.accept()
            t0 = time.monotonic()
            n = drain(conn)
            t = time.monotonic() - t0
            conn.sendall(f"len={n}\n".encode())
            conn.close()
            results.append((n, t))
        srv.close()
    except OSError as e:
        errors.append(f"guest->host listener: {e}")


def host_to_guest(sock_path, nbytes, payload):
    """One transfer to guest port 5000: (seconds, the guest's reply)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(600)
    s.connect(sock_path)
    s.sendall(b"CONNECT 5000\n")
    line = b""
    while not line.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            raise OSError(f"hearth closed the connection after {line!r}")
        line += b
    if not line.startswith(b"OK "):
        raise OSError(f"unexpected answer {line!r}")
    t0 = time.monotonic()
    send_all(s, nbytes, payload)
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        reply += b
    t = time.monotonic() - t0
    s.close()
    return t, reply.decode("ascii", "replace").strip()


def one_boot(a, hearth, kernel, initrd, payload):
    nbytes = a.mib * MIB
    tmp = tempfile.mkdtemp(prefix="hearth-vsock-bench-")
    sock = os.path.join(tmp, "v.sock")
    g2h, errors = [], []
    srv = threading.Thread(target=guest_to_host_server, args=(sock + "_6000", a.transfers, g2h, errors), daemon=True)
    srv.start()
    time.sleep(0.2)
    script = (f"for i in $(seq {a.transfers}); do hearth-vsock send 2 6000 {nbytes} || exit 1; done; "
              f"hearth-vsock listen 5000 {a.transfers} && echo vs-done-$((6*7))")
    cmd = [str(hearth), "run", "--kernel", str(kernel), "--initrd", str(initrd), "--vcpus", "1", "--memory", "256",
           "--timeout", str(int(a.timeout)), "--vsock", f"cid=3,uds={sock}", "--", "/bin/sh", "-c", script]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    console = bytearray()
    h2g, replies = [], []
    t_end = time.monotonic() + a.timeout
    try:
        while time.monotonic() < t_end and DONE not in console:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                console += chunk
            if b"hearth-vsock: listening 5000" in console and not h2g and not errors:
                for _ in range(a.transfers):
                    try:
                        t, reply = host_to_guest(sock, nbytes, payload)
                    except OSError as e:
                        errors.append(f"host->guest: {e}")
                        break
                    h2g.append((nbytes, t))
                    replies.append(reply)
            elif proc.poll() is not None and not ready:
                break
    finally:
        err = B.stop_and_collect(proc)
        srv.join(timeout=1)
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    text = console.decode("utf-8", "replace").replace("\r", "")
    sent = [l for l in text.splitlines() if l.startswith("hearth-vsock: sent ")]
    for n, _ in g2h:
        if n != nbytes:
            errors.append(f"guest->host: the host received {n} bytes, not {nbytes}")
    for r in replies:
        if not r.startswith(f"len={nbytes} "):
            errors.append(f"host->guest: the guest replied {r!r}")
    if DONE not in console or len(sent) != a.transfers:
        errors.append("the guest did not finish:\n" + "\n".join(text.splitlines()[-8:]) + "\n" + err[-1000:])
    return g2h, h2g, errors


def uds_reference(nbytes, payload, count):
    out = []
    for _ in range(count):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        got = []
        t = threading.Thread(target=lambda: got.append(drain(b)))
        t0 = time.monotonic()
        t.start()
        send_all(a, nbytes, payload)
        a.shutdown(socket.SHUT_WR)
        t.join()
        out.append((got[0], time.monotonic() - t0))
        a.close()
        b.close()
    return out


def fmt(x):
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def mibs(xs):
    return [n / MIB / t for n, t in xs if t > 0]


def main():
    a = parse()
    hearth = B.find_hearth(a.hearth)
    kernel, initrd = B.find_guest(a.kernel, a.initrd)
    say = lambda s="": print(s, file=sys.stderr, flush=True)  # noqa: E731
    session = B.session_line()
    payload = bytes((i * 131) & 0xFF for i in range(CHUNK))
    nbytes = a.mib * MIB
    g2h, h2g, errors = [], [], []
    for i in range(a.runs):
        say(f"run {i + 1}/{a.runs}: hearth boot, {a.transfers} x {a.mib} MiB each way ...")
        g, h, e = one_boot(a, hearth, kernel, initrd, payload)
        say(f"    guest->host {[fmt(x) for x in mibs(g)]} MiB/s, host->guest {[fmt(x) for x in mibs(h)]} MiB/s")
        for x in e:
            say("    ERROR: " + x)
        g2h += g
        h2g += h
        errors += [f"run {i + 1}: {x}" for x in e]
    say("host UDS reference ...")
    ref = uds_reference(nbytes, payload, a.runs * a.transfers)
    vhost = Path("/dev/vhost-vsock").exists()

    def row(name, xs):
        m = B.median(mibs(xs))
        r = B.median(mibs(ref))
        runs = ", ".join(fmt(x) for x in mibs(xs))
        if not m:
            return f"| {name} | 0 | — | — | — |"
        vs = f"1/{r / m:.0f}" if m < r / 100 else f"{m / r:.2f}"
        return f"| {name} | {len(xs)} | {runs} | **{fmt(m)}** | {vs} |"

    out = [session, "", f"{a.mib} MiB per transfer, {a.transfers} transfers per direction in each of {a.runs} hearth boots "
           "(1 vCPU, 256 MiB); MiB/s, median over all transfers.", "",
           "| path | transfers | MiB/s each | median MiB/s | vs host UDS |",
           "| --- | ---: | --- | ---: | ---: |",
           row("guest → host (hearth-vsock send → `SOCK_6000`)", g2h),
           row("host → guest (`CONNECT 5000` → hearth-vsock listen)", h2g),
           row("host UDS reference (socketpair, same Python code, no VM)", ref), "",
           "QEMU vhost-vsock: " + ("/dev/vhost-vsock exists on this host (not compared yet)." if vhost else
                                   "not compared: this host has no /dev/vhost-vsock (`modprobe vhost_vsock`: "
                                   "module not found), and QEMU has no userspace virtio-vsock backend.")]
    if errors:
        out += ["", "Errors:", "```"] + [l for e in errors for l in e.splitlines()] + ["```"]
    text = "\n".join(out)
    print(text)
    if a.md_out:
        Path(a.md_out).write_text(text + "\n")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(dict(g2h=g2h, h2g=h2g, ref=ref, errors=errors), indent=1))


if __name__ == "__main__":
    main()

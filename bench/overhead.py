#!/usr/bin/env python3
"""VMM memory overhead and start-up latency, hearth vs QEMU microvm (same patched guest).

hearth (from its own `--stats`, printed when the VM ends):
  - "first KVM_RUN: X ms after start": process start (main()) to the first KVM_RUN ioctl;
  - "VMM overhead": process RSS minus guest RAM pages resident (mincore), at the end of the run.
Both VMMs (sampled by this script right after the userspace marker appears):
  - VmRSS from /proc/<pid>/status, and the resident size of the guest-RAM mapping from
    /proc/<pid>/smaps; RSS minus that = VMM overhead, measured the same way for both.
Firecracker is not run here: its published idle RSS on this host kind (PVM-HOST.md) is printed as
a labelled reference only.
"""

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

FIRECRACKER_REF = "Firecracker (reference, not run here: /work/shared/PVM-HOST.md, same host kind)"
FIRECRACKER_IDLE_RSS_MIB = 3.6
FIRECRACKER_API_MS = 8.5


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--memory", type=int, default=128)
    p.add_argument("--timeout", type=float, default=180)
    p.add_argument("--kernel")
    p.add_argument("--initrd")
    p.add_argument("--hearth")
    p.add_argument("--md-out")
    p.add_argument("--json-out")
    return p.parse_args()


def stats_of(stderr):
    first = re.search(r"first KVM_RUN: ([0-9.]+) ms after start", stderr)
    mem = re.search(r"process RSS ([0-9.]+) MiB, guest RAM resident ([0-9.]+) MiB, VMM overhead ([0-9.]+) MiB", stderr)
    return dict(
        first_run_ms=float(first.group(1)) if first else None,
        end_rss=float(mem.group(1)) if mem else None,
        end_guest=float(mem.group(2)) if mem else None,
        end_overhead=float(mem.group(3)) if mem else None,
    )


def mib(kib):
    return None if kib is None else kib / 1024.0


def fmt(x, unit=""):
    return "—" if x is None else f"{x:.1f}{unit}"


def main():
    a = parse()
    B.require("qemu-system-x86_64")
    hearth = B.find_hearth(a.hearth)
    kernel, initrd = B.find_guest(a.kernel, a.initrd)
    patched, _ = B.patched_kernel(kernel)
    cmdline = B.guest_cmdline()
    rows = {"hearth": [], "qemu": []}
    for i in range(a.runs):
        for vmm in (["hearth", "qemu"] if i % 2 == 0 else ["qemu", "hearth"]):
            print(f"run {i + 1}/{a.runs}: {vmm} ...", file=sys.stderr, flush=True)
            if vmm == "hearth":
                cmd = B.hearth_cmd(hearth, patched, initrd, a.vcpus, a.memory, cmdline, a.timeout, stats=True)
                r = B.run_vm(cmd, a.timeout, a.memory, after_marker="wait")
            else:
                cmd = B.qemu_cmd(patched, initrd, a.vcpus, a.memory, cmdline)
                r = B.run_vm(cmd, a.timeout, a.memory, after_marker="kill")
            row = dict(marker_s=r.marker_s, rc=r.rc, rss_mib=mib(r.rss_kib),
                       guest_map_mib=mib(r.guest_ram[0]) if r.guest_ram else None,
                       guest_res_mib=mib(r.guest_ram[1]) if r.guest_ram else None)
            row["overhead_mib"] = (row["rss_mib"] - row["guest_res_mib"]
                                   if row["rss_mib"] is not None and row["guest_res_mib"] is not None else None)
            if vmm == "hearth":
                row.update(stats_of(r.stderr))
            rows[vmm].append(row)
            print(f"    {row}", file=sys.stderr, flush=True)

    def med(vmm, key):
        return B.median([x[key] for x in rows[vmm] if x.get(key) is not None])

    out = []
    out.append(f"Medians of {a.runs} interleaved runs, {a.vcpus} vCPU, {a.memory} MiB, same patched kernel and "
               f"initrd for both. \"At marker\" = sampled from /proc right after the userspace marker; "
               f"\"overhead\" = RSS minus the resident part of the guest-RAM mapping.")
    out.append("")
    out.append("| VMM | first KVM_RUN after start | RSS at marker (MiB) | guest RAM resident at marker (MiB) "
               "| VMM overhead at marker (MiB) | hearth --stats overhead at exit (MiB) |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    out.append(f"| hearth | {fmt(med('hearth', 'first_run_ms'), ' ms')} | {fmt(med('hearth', 'rss_mib'))} | "
               f"{fmt(med('hearth', 'guest_res_mib'))} | {fmt(med('hearth', 'overhead_mib'))} | "
               f"{fmt(med('hearth', 'end_overhead'))} |")
    out.append(f"| QEMU microvm | not measured (no equivalent counter) | {fmt(med('qemu', 'rss_mib'))} | "
               f"{fmt(med('qemu', 'guest_res_mib'))} | {fmt(med('qemu', 'overhead_mib'))} | — |")
    out.append(f"| {FIRECRACKER_REF} | API answers ~{FIRECRACKER_API_MS} ms after start | "
               f"idle ~{FIRECRACKER_IDLE_RSS_MIB} (no guest) | — | — | — |")
    ho, qo = med("hearth", "overhead_mib"), med("qemu", "overhead_mib")
    hr, qr = med("hearth", "rss_mib"), med("qemu", "rss_mib")
    out.append("")
    if ho is not None and qo:
        out.append(f"VMM overhead at marker, hearth / QEMU: **{ho / qo:.2f}** ({ho:.1f} vs {qo:.1f} MiB); "
                   f"total RSS hearth / QEMU: {hr / qr:.2f}.")
    gm = [x["guest_map_mib"] for v in rows.values() for x in v if x.get("guest_map_mib")]
    if gm:
        out.append(f"Guest-RAM mapping identified in smaps: {', '.join(sorted({f'{g:.0f} MiB' for g in gm}))} "
                   "(the anonymous mapping of at least the guest size with the largest RSS).")
    text = "\n".join(out) + "\n"
    print(text)
    if a.md_out:
        Path(a.md_out).write_text(text)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

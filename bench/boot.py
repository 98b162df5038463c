#!/usr/bin/env python3
"""Boot time, hearth vs QEMU microvm: seconds from process start to the guest's userspace marker
("hearth-guest: init ready"), same kernel, initrd, vCPUs, memory and kernel command line.

Fairness: QEMU stops at the first instruction this host's KVM cannot emulate (int3 in
int3_selftest(), fwait in fpu__drop()); hearth completes those itself. So both VMMs boot a
binary-patched copy of the kernel without them (benchlib.plan_patches). hearth on the
unpatched kernel is its own row; QEMU on the unpatched kernel is run once to record how it fails.
With 2 vCPUs QEMU is first tried as is; if it hangs at SMP bring-up (PV IPI hypercall, see
/work/shared/PVM-HOST.md) the QEMU runs use the guest-side workaround `nopv`, and hearth is then
measured with the same command line too, so the ratio compares identical guests.

Runs are interleaved (one VM at a time; order rotates each round). Prints markdown.
"""

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="runs per configuration (default 3)")
    p.add_argument("--vcpus", default="1,2", help="comma-separated vCPU counts (default 1,2)")
    p.add_argument("--memory", type=int, default=128, help="guest MiB (default 128)")
    p.add_argument("--timeout", type=float, default=180, help="per-run timeout in seconds (default 180)")
    p.add_argument("--stall", type=float, default=45,
                   help="give up on a run whose console is silent this long before the marker (default 45)")
    p.add_argument("--kernel")
    p.add_argument("--initrd")
    p.add_argument("--hearth")
    p.add_argument("--md-out", help="also write the markdown report here")
    p.add_argument("--json-out", help="write raw results here")
    return p.parse_args()


class Config:
    def __init__(self, label, vmm, kernel_label, cmd, note="", cmdline=None):
        self.label, self.vmm, self.kernel_label, self.cmd, self.note = label, vmm, kernel_label, cmd, note
        self.cmdline = cmdline or B.guest_cmdline(note)
        self.results = []

    def times(self):
        return [r.marker_s for r in self.results if r.marker_s is not None]

    def cpus_up(self):
        """CPUs the guest kernel reported bringing up ("smp: Brought up N node(s), M CPUs"), per run."""
        seen = set()
        for r in self.results:
            m = re.search(rb"smp: Brought up \d+ nodes?, (\d+) CPUs?", r.console)
            seen.add(int(m.group(1)) if m else None)
        return ", ".join("?" if x is None else str(x) for x in sorted(seen, key=lambda x: -1 if x is None else x))

    def cpu(self):
        return [r.cpu_s for r in self.results if r.marker_s is not None and r.cpu_s is not None]


def describe_failure(r, head=6, tail=3):
    lines = [f"outcome: {r.outcome}; process stopped {r.end_s:.2f} s after start (exit status {r.rc})"]
    if r.first_err_s is not None:
        lines.append(f"first VMM error output {r.first_err_s:.2f} s after start")
    err = [l.rstrip() for l in r.stderr.strip().splitlines() if l.strip()]
    if err:
        lines.append("VMM stderr:")
        if len(err) <= head + tail:
            shown = err
        else:
            # the first lines (the error), where the vCPU was (RIP, instruction bytes), the last lines
            keep = set(range(head)) | set(range(len(err) - tail, len(err)))
            keep |= {i for i, l in enumerate(err) if "RIP=" in l or l.startswith("Code=")}
            shown, prev = [], -1
            for i in sorted(keep):
                if i != prev + 1:
                    shown.append("...")
                shown.append(err[i])
                prev = i
        lines += ["    " + l for l in shown]
    lines.append("console tail:")
    lines += ["    " + l for l in B.console_tail(r, 8)]
    return lines


def main():
    a = parse()
    B.require("qemu-system-x86_64")
    hearth = B.find_hearth(a.hearth)
    kernel, initrd = B.find_guest(a.kernel, a.initrd)
    patched, patches = B.patched_kernel(kernel)
    vcpu_list = [int(v) for v in a.vcpus.split(",") if v.strip()]
    mem = a.memory
    out = []
    say = lambda s="": (print(s, file=sys.stderr, flush=True))  # noqa: E731
    raw = {"patches": B.describe_patches(patches), "kernel": str(kernel), "initrd": str(initrd)}

    say(f"kernel {kernel}\npatched copy {patched}")
    for line in B.describe_patches(patches):
        say("  " + line)

    # QEMU with plain `-cpu host`, once (PVM hosts reject one of its MSRs; see benchlib.qemu_cpu).
    plain = None
    if B.qemu_cpu() != "host":
        say("QEMU, -cpu host (plain), 1 vCPU ...")
        plain = B.run_vm(B.qemu_cmd(patched, initrd, 1, mem, B.guest_cmdline(), cpu="host"), 30, mem, stall=20,
                         after_marker="kill")
        raw["qemu_plain_cpu_host"] = dict(outcome=plain.outcome, end_s=plain.end_s, rc=plain.rc, stderr=plain.stderr)

    # QEMU on the unpatched kernel, once: how it fails.
    say("QEMU, unpatched kernel, 1 vCPU (expected to fail) ...")
    qfail = B.run_vm(B.qemu_cmd(kernel, initrd, 1, mem, B.guest_cmdline()), a.timeout, mem, stall=a.stall,
                     after_marker="kill", stop_on_stderr=b"KVM internal error")
    raw["qemu_unpatched"] = dict(outcome=qfail.outcome, end_s=qfail.end_s, rc=qfail.rc, stderr=qfail.stderr,
                                 first_err_s=qfail.first_err_s,
                                 console_tail=B.console_tail(qfail, 12))

    sections = []
    mismatches = []
    for n in vcpu_list:
        cmdline = B.guest_cmdline()
        configs = [
            Config("hearth", "hearth", "patched", B.hearth_cmd(hearth, patched, initrd, n, mem, cmdline, a.timeout)),
            Config("QEMU microvm", "qemu", "patched", B.qemu_cmd(patched, initrd, n, mem, cmdline)),
            Config("hearth", "hearth", "unpatched", B.hearth_cmd(hearth, kernel, initrd, n, mem, cmdline, a.timeout)),
        ]
        smp_note = None
        if n > 1:
            # Probe: does QEMU get through SMP bring-up with this guest as is?
            say(f"QEMU, patched kernel, {n} vCPUs, no workaround (SMP probe) ...")
            probe = B.run_vm(configs[1].cmd, a.timeout, mem, stall=a.stall, after_marker="kill")
            raw[f"qemu_smp_probe_{n}"] = dict(outcome=probe.outcome, marker_s=probe.marker_s, end_s=probe.end_s,
                                              console_tail=B.console_tail(probe, 6))
            if probe.marker_s is None:
                smp_note = (f"QEMU with {n} vCPUs and the plain command line did not reach the marker "
                            f"({probe.outcome} after {probe.end_s:.1f} s); last console lines:",
                            B.console_tail(probe, 4))
                nopv = B.guest_cmdline("nopv")
                configs[1] = Config("QEMU microvm + `nopv`", "qemu", "patched",
                                    B.qemu_cmd(patched, initrd, n, mem, nopv), note="nopv")
                configs.insert(1, Config("hearth + `nopv`", "hearth", "patched",
                                         B.hearth_cmd(hearth, patched, initrd, n, mem, nopv, a.timeout), note="nopv"))
            else:
                configs[1].results.append(probe)  # a valid run: counts as the first one
                smp_note = (f"QEMU with {n} vCPUs and the plain command line reached the marker "
                            f"({probe.marker_s:.1f} s), so no workaround (`nopv`) was needed; that probe "
                            "is QEMU's first run in the table.", None)
        for i in range(a.runs):
            order = configs[i % len(configs):] + configs[: i % len(configs)]
            for c in order:
                if c.vmm == "qemu" and len(c.results) > i:
                    continue  # the probe already gave this round's QEMU run
                say(f"[{n} vCPU] run {i + 1}/{a.runs}: {c.label} ({c.kernel_label}) ...")
                r = B.run_vm(c.cmd, a.timeout, mem, stall=a.stall,
                             after_marker="kill" if c.vmm == "qemu" else "wait")
                c.results.append(r)
                say(f"    marker {B.fmt_s(r.marker_s)} s, CPU {B.fmt_s(r.cpu_s)} s, outcome {r.outcome}, rc {r.rc}")
                if c.vmm == "hearth":
                    used = B.hearth_used_cmdline(r.stderr)
                    want = B.guest_append(c.cmdline)
                    if used != want:
                        mismatches.append(f"{n} vCPU, {c.label}: hearth used `{used}`, QEMU got `{want}`")
        sections.append((n, configs, smp_note))

    # --- report ---
    out.append(f"Boot to userspace marker, seconds from process start (median of {a.runs} interleaved runs; "
               f"{mem} MiB; guest command `/bin/true`; command line `{B.guest_cmdline()}`).")
    out.append("")
    out.append("| vCPUs | VMM | kernel | CPUs up | runs (s) | median (s) | vs QEMU (same guest) "
               "| CPU s at marker, median | CPU vs QEMU |")
    out.append("| ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for n, configs, _ in sections:
        q = {c.note: B.median(c.times()) for c in configs if c.vmm == "qemu"}
        qc = {c.note: B.median(c.cpu()) for c in configs if c.vmm == "qemu"}
        for c in configs:
            med, cmed = B.median(c.times()), B.median(c.cpu())
            runs = ", ".join(B.fmt_s(r.marker_s) if r.marker_s is not None else r.outcome for r in c.results)
            ref, cref = q.get(c.note), qc.get(c.note)

            def ratio(x, y):
                if c.vmm == "qemu":
                    return "1.00 (reference)" if x else "—"
                if not (x and y):
                    return "—"
                return f"{x / y:.2f}" + (" (QEMU cannot boot it)" if c.kernel_label == "unpatched" else "")

            out.append(f"| {n} | {c.label} | {c.kernel_label} | {c.cpus_up()} | {runs} | {B.fmt_s(med)} | {ratio(med, ref)} "
                       f"| {B.fmt_s(cmed)} | {ratio(cmed, cref)} |")
            raw[f"{n}:{c.label}:{c.kernel_label}"] = [dict(marker_s=r.marker_s, cpu_s=r.cpu_s, end_s=r.end_s,
                                                           rc=r.rc, outcome=r.outcome) for r in c.results]
    out.append("")
    out.append("CPUs up: what the guest kernel reported (`smp: Brought up ... CPUs`) in each run.")
    out.append("Ratio = hearth median / QEMU median on the identical kernel and command line (below 1: hearth is "
               "faster). CPU s = user + system time of the whole VMM process when the marker arrived (the "
               "emulated guest ring 0 is charged as system time of the vCPU threads); it is much less sensitive "
               "to other load on the host than the wall-clock time.")
    if mismatches:
        out.append("")
        out.append("**Warning: command lines differed** (the ratio compares different guests):")
        out += ["- " + m for m in sorted(set(mismatches))]
    else:
        out.append("hearth's logged kernel command line matched QEMU's `-append` in every run.")
    for n, configs, note in sections:
        if note:
            out.append("")
            out.append(f"SMP ({n} vCPUs): {note[0]}")
            if note[1] is None:
                continue
            out.append("")
            out.append("```")
            out += note[1]
            out.append("```")
            out.append("")
            out.append("The QEMU rows for this vCPU count therefore boot with `nopv` (the guest-side workaround: no "
                       "KVM paravirt features, so no PV IPI hypercall), and hearth is measured with the same command "
                       "line next to them; the plain hearth rows use hearth's default, which hides the hypercall "
                       "features in CPUID instead.")
    for n, configs, _ in sections:
        for c in configs:
            bad = [r for r in c.results if r.marker_s is None]
            for r in bad[:1]:
                out.append("")
                out.append(f"Failed run: {n} vCPU, {c.label}, {c.kernel_label}:")
                out.append("```")
                out += describe_failure(r)
                out.append("```")
            ok_bad_rc = [r for r in c.results if r.marker_s is not None and c.vmm == "hearth" and r.rc != 0]
            if ok_bad_rc:
                out.append("")
                out.append(f"Note: {len(ok_bad_rc)} hearth run(s) ({n} vCPU, {c.kernel_label}) reached the marker "
                           f"but exited with status {ok_bad_rc[0].rc}" + (" (killed after the guest did not finish)"
                                                                          if ok_bad_rc[0].killed else "") + ".")
    out.append("")
    out.append("Kernel patches applied to the copy both VMMs boot (found through the ELF symbol table):")
    out.append("")
    out += ["- " + l for l in B.describe_patches(patches)]
    out.append("")
    if plain is not None:
        out.append(f"QEMU runs use `-cpu {B.qemu_cpu()}`. With plain `-cpu host` (patched kernel, run once):")
        out.append("")
        out.append("```")
        out += describe_failure(plain)
        out.append("```")
        out.append("")
    out.append("QEMU on the unpatched kernel (1 vCPU, run once):")
    out.append("")
    out.append("```")
    out += describe_failure(qfail)
    out.append("```")
    text = "\n".join(out) + "\n"
    print(text)
    if a.md_out:
        Path(a.md_out).write_text(text)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()

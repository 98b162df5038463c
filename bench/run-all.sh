#!/bin/bash
# Run every hearth benchmark on this machine and write the results into docs/benchmarks.md
# (the blocks between <!-- BEGIN GENERATED: x --> and <!-- END GENERATED: x -->; the prose
# around them is hand-written and kept).
#
#   bench/run-all.sh [--runs N] [--skip-boot] [--skip-overhead] [--skip-pio] [--skip-snapshot]
#                    [--skip-block] [--skip-vsock] [--skip-net] [--with-hyperfine] [--with-qemu-snapshot]
#
# --with-hyperfine adds hearth's end-to-end run (boot, /bin/true, reboot) timed by hyperfine.
# --with-qemu-snapshot adds QEMU's migrate-to-file / -incoming to the snapshot benchmark.
#
# Needs: /dev/kvm, the guest from guest/build.sh, qemu-system-x86 and hyperfine (installed with
# apt-get if missing), cargo. VMs run one at a time: on a 2-core host two guests at once would
# measure the scheduler, not the VMMs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOC=$ROOT/docs/benchmarks.md
RUNS=3
SKIP_BOOT=0 SKIP_OVERHEAD=0 SKIP_PIO=0 SKIP_HYPERFINE=1 SKIP_SNAPSHOT=0 SKIP_BLOCK=0 SKIP_VSOCK=0 SKIP_NET=0 QEMU_SNAPSHOT=
while [ $# -gt 0 ]; do
	case $1 in
	--runs) RUNS=$2; shift ;;
	--skip-boot) SKIP_BOOT=1 ;;
	--skip-overhead) SKIP_OVERHEAD=1 ;;
	--skip-pio) SKIP_PIO=1 ;;
	--skip-snapshot) SKIP_SNAPSHOT=1 ;;
	--skip-block) SKIP_BLOCK=1 ;;
	--skip-vsock) SKIP_VSOCK=1 ;;
	--skip-net) SKIP_NET=1 ;;
	--with-qemu-snapshot) QEMU_SNAPSHOT=--with-qemu ;;
	--with-hyperfine) SKIP_HYPERFINE=0 ;;
	-h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "run-all: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

say() { echo "[bench] $*" >&2; }

# --- tools --------------------------------------------------------------------------------
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v hyperfine >/dev/null || missing+=(hyperfine)
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]} with apt-get"
	apt-get install -y "${missing[@]}" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null; }
fi

say "building hearth (release)"
(cd "$ROOT" && cargo build --release -p hearth -q)
HEARTH=$ROOT/target/release/hearth

# The default guest (guest/build.sh points "default" at its newest build); build it only if
# there is none, so a benchmark never waits for a kernel build because guest/ is being edited.
GUEST_DIR=${HEARTH_CACHE:-$HOME/.cache/hearth}/guest/default
if [ ! -f "$GUEST_DIR/vmlinux" ] || [ ! -f "$GUEST_DIR/initramfs.cpio" ]; then
	say "no default guest yet: building it (guest/build.sh)"
	"$ROOT/guest/build.sh" >&2
fi
# Work on a private copy: guest/build.sh replaces the cache entry when guest/ changes, and a
# session must boot one guest from start to end.
GUEST_KEY=$(basename "$(readlink -f "$GUEST_DIR")")
SNAP=${HEARTH_CACHE:-$HOME/.cache/hearth}/bench/guest-$GUEST_KEY
if [ ! -f "$SNAP/initramfs.cpio" ]; then
	mkdir -p "$SNAP.tmp"
	cp "$GUEST_DIR/vmlinux" "$GUEST_DIR/initramfs.cpio" "$SNAP.tmp/"
	rm -rf "$SNAP" && mv "$SNAP.tmp" "$SNAP"
fi
KERNEL=$SNAP/vmlinux
INITRD=$SNAP/initramfs.cpio

# Raw results stay here (not committed) even if writing the doc fails.
OUT=$ROOT/target/bench-results/$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
say "results: $OUT"

# --- machine --------------------------------------------------------------------------------
{
	echo "| | |"
	echo "| --- | --- |"
	echo "| CPU | $(lscpu | sed -n 's/^Model name: *//p' | head -1) |"
	echo "| cores (online CPUs) | $(nproc) |"
	echo "| RAM | $(free -g | awk '/^Mem:/{print $2}') GiB |"
	echo "| host kernel | $(uname -r) |"
	if [ -d /sys/module/kvm_pvm ]; then
		echo "| KVM | PVM (\`/sys/module/kvm_pvm\` present: guest ring 0 runs in KVM's instruction emulator) |"
	else
		echo "| KVM | $(ls -d /sys/module/kvm_intel /sys/module/kvm_amd 2>/dev/null | xargs -n1 basename | tr '\n' ' ') |"
	fi
	echo "| QEMU | $(qemu-system-x86_64 --version | head -1) |"
	echo "| hearth | $(cd "$ROOT" && git rev-parse --short HEAD) ($(cd "$ROOT" && git log -1 --format=%cs)) |"
	echo "| guest | \`$GUEST_KEY\`: vmlinux $(stat -c %s "$KERNEL") bytes, initramfs $(stat -c %s "$INITRD") bytes |"
	echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
	echo "| load average at start | $(cut -d' ' -f1-3 /proc/loadavg) (other work on the host adds noise to both VMMs alike) |"
} >"$OUT/machine.md"
cat "$OUT/machine.md" >&2

# --- benchmarks -----------------------------------------------------------------------------
if [ $SKIP_PIO = 0 ]; then
	say "exit round trip (cargo bench -p vmm --bench pio_exit)"
	(cd "$ROOT" && cargo bench -q -p vmm --bench pio_exit 2>/dev/null) | tee "$OUT/pio.md" >&2
fi
if [ $SKIP_BOOT = 0 ]; then
	say "boot time (bench/boot.sh --runs $RUNS)"
	"$ROOT/bench/boot.sh" --runs "$RUNS" --kernel "$KERNEL" --initrd "$INITRD" --hearth "$HEARTH" \
		--md-out "$OUT/boot.md" --json-out "$OUT/boot.json" >/dev/null
fi
if [ $SKIP_OVERHEAD = 0 ]; then
	say "overhead (bench/overhead.sh --runs $RUNS)"
	"$ROOT/bench/overhead.sh" --runs "$RUNS" --kernel "$KERNEL" --initrd "$INITRD" --hearth "$HEARTH" \
		--md-out "$OUT/overhead.md" >/dev/null
fi
if [ $SKIP_SNAPSHOT = 0 ]; then
	say "snapshots, restore, clones (bench/snapshot.py --runs $RUNS $QEMU_SNAPSHOT)"
	python3 "$ROOT/bench/snapshot.py" --runs "$RUNS" $QEMU_SNAPSHOT --kernel "$KERNEL" --initrd "$INITRD" \
		--hearth "$HEARTH" --md-out "$OUT/snapshot.md" --json-out "$OUT/snapshot.json" >/dev/null
fi
if [ $SKIP_BLOCK = 0 ]; then
	say "block I/O (bench/block.py --runs $RUNS)"
	python3 "$ROOT/bench/block.py" --runs "$RUNS" --kernel "$KERNEL" --initrd "$INITRD" --hearth "$HEARTH" \
		--md-out "$OUT/block.md" --json-out "$OUT/block.json" >/dev/null
fi
if [ $SKIP_VSOCK = 0 ]; then
	say "vsock throughput (bench/vsock.py --runs $RUNS)"
	python3 "$ROOT/bench/vsock.py" --runs "$RUNS" --kernel "$KERNEL" --initrd "$INITRD" --hearth "$HEARTH" \
		--md-out "$OUT/vsock.md" --json-out "$OUT/vsock.json" >/dev/null
fi
if [ $SKIP_NET = 0 ]; then
	say "network throughput and latency on a tap (bench/net.py --runs 1)"
	python3 "$ROOT/bench/net.py" --runs 1 --kernel "$KERNEL" --initrd "$INITRD" --hearth "$HEARTH" \
		--md-out "$OUT/net.md" >/dev/null
fi
if [ $SKIP_HYPERFINE = 0 ]; then
	say "hearth end to end (hyperfine)"
	PATCHED=$(cd "$ROOT/bench" && python3 -c "import benchlib as B; print(B.patched_kernel('$KERNEL')[0])")
	CMDLINE=$(cd "$ROOT/bench" && python3 -c "import benchlib as B; print(B.guest_cmdline())")
	hyperfine --runs "$RUNS" --style basic --export-markdown "$OUT/hyperfine.md" \
		-n "hearth, patched kernel, 1 vCPU" \
		"$HEARTH run --kernel $PATCHED --initrd $INITRD --vcpus 1 --memory 128 --cmdline '$CMDLINE' --timeout 180 -- /bin/true" \
		-n "hearth, unpatched kernel, 1 vCPU" \
		"$HEARTH run --kernel $KERNEL --initrd $INITRD --vcpus 1 --memory 128 --cmdline '$CMDLINE' --timeout 180 -- /bin/true" \
		>/dev/null 2>&1 </dev/null || say "hyperfine failed (see above)"
else
	echo "Not run in this session (\`bench/run-all.sh --with-hyperfine\`)." >"$OUT/hyperfine.md"
fi

# --- write the doc --------------------------------------------------------------------------
python3 - "$DOC" "$OUT" <<'PY'
import re, sys
from pathlib import Path
doc, out = Path(sys.argv[1]), Path(sys.argv[2])
text = doc.read_text()
for name in ["machine", "boot", "overhead", "pio", "snapshot", "block", "vsock", "net", "hyperfine"]:
    f = out / f"{name}.md"
    if not f.exists():
        continue
    body = f.read_text().strip()
    pat = re.compile(rf"(<!-- BEGIN GENERATED: {name} -->\n)(?:.*?\n)?(<!-- END GENERATED: {name} -->)", re.S)
    if not pat.search(text):
        sys.exit(f"run-all: {doc} has no GENERATED block named {name}")
    text = pat.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
doc.write_text(text)
print(f"[bench] wrote {doc}", file=sys.stderr)
PY

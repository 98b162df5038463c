#!/bin/bash
# Installs the Debian 12 packages hearth needs to build its guest, run its tests and
# benchmarks. Idempotent: does nothing (and needs no network) when all are present.
set -euo pipefail

PKGS=(
	build-essential bc bison flex libelf-dev cpio xz-utils # guest kernel build
	linux-source-6.1                                       # guest kernel source (Debian's)
	busybox-static                                         # guest userland
	util-linux                                             # setpriv for the no-permission test
	e2fsprogs                                              # guest/mkrootfs.sh (mke2fs -d, debugfs)
	socat python3-venv                                     # tests/api/fuzz.sh (schemathesis)
	passt                                                  # --net user (user-mode NAT)
)
if [ "${1:-}" = "--bench" ]; then
	PKGS+=(qemu-system-x86 hyperfine)
fi

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "[deps] all packages present"
	exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "[deps] installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "[deps] done"

#!/bin/bash
# Boot time to the guest's userspace marker, hearth vs QEMU microvm on the same (patched) kernel.
# Options: --runs N (default 3), --vcpus 1,2, --memory MIB, --timeout S, --md-out FILE; see --help.
# The work is in boot.py (Python 3 standard library: ELF patching and timing).
exec python3 "$(dirname "${BASH_SOURCE[0]}")/boot.py" "$@"

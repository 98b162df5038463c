#!/bin/bash
# VMM memory overhead and time to first KVM_RUN: hearth (--stats and /proc) vs QEMU microvm (/proc),
# Firecracker's published numbers as a labelled reference. See overhead.py --help.
exec python3 "$(dirname "${BASH_SOURCE[0]}")/overhead.py" "$@"

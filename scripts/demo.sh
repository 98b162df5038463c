#!/bin/bash
# From a fresh Debian 12 machine to a running microVM: install packages, build the default
# guest (cached after the first time), build hearth, and boot the guest with its console on
# this terminal. Extra arguments go to `hearth run` (e.g. --vcpus 2, or -- /bin/uname -a).
# Leave the guest shell with `exit` (or Ctrl-A x).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh
guest/build.sh
echo "[hearth] building hearth (cargo build --release)"
cargo build --release --quiet -p hearth
echo "[hearth] booting the default guest: target/release/hearth run $*"
exec target/release/hearth run "$@"

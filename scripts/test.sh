#!/bin/bash
# The whole test suite, from a fresh Debian 12 machine: packages, the default guest (cached),
# then every unit, tiny-guest and Linux end-to-end test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh
guest/build.sh
echo "[test] cargo fmt --check, cargo clippy -D warnings"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "[test] API fuzzing (schemathesis)"
tests/api/fuzz.sh
echo "[test] cargo test --workspace"
cargo test --workspace "$@"

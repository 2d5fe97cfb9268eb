#!/usr/bin/env bash
# The whole test suite — the README's test command, and what CI runs (.ci/run).
#
#   scripts/test.sh            everything: host set-up, lint, unit + integration tests, and the
#                              end-to-end tests that boot real Linux guests under QEMU
#   scripts/test.sh --no-e2e   skip the guest boots (quick local loop)
#
# On a fresh Debian bookworm machine it installs what it needs (apt-get, cargo fetch).
set -euo pipefail
cd "$(dirname "$0")/.."

run_e2e=1
for a in "$@"; do
  case "$a" in
    --no-e2e) run_e2e=0 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

step() { printf '\n== %s ==\n' "$*"; }

step "host set-up"
bash scripts/setup-host.sh

step "format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and integration tests"
cargo test --workspace --locked

if [ "$run_e2e" -eq 1 ]; then
  step "end-to-end: real guests under QEMU"
  bash tests/e2e/run.sh
fi

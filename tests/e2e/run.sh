#!/usr/bin/env bash
# dsproxy's end-to-end tests: real Linux guests under QEMU (the last step of scripts/test.sh).
# Builds what it needs (dsproxy-device, dsproxy-host-reader, the guest kernels, dsproxy_oss.ko,
# the test programs), boots each guest/driver combination and checks the captures byte for
# byte. The driver is tests/e2e/e2e.py (its docstring lists the checks and the environment
# variables, e.g. E2E_ONLY=6.12-stock E2E_BOOTS=play to run a subset). Ends with the line
# "N passed, M failed"; exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v python3 >/dev/null || { echo "e2e: python3 not found (run scripts/setup-host.sh)" >&2; exit 2; }
exec python3 tests/e2e/e2e.py "$@"

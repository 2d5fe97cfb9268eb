#!/usr/bin/env bash
# dsproxy's end-to-end tests: real Linux guests under QEMU (the last step of scripts/test.sh).
# Builds what it needs (dsproxy-device, dsproxy-host-reader, the guest kernels, dsproxy_oss.ko,
# the test programs), boots each guest/driver combination and checks the captures byte for
# byte. The driver is tests/e2e/e2e.py (its docstring lists the checks and the environment
# variables, e.g. E2E_ONLY=6.12-stock E2E_BOOTS=play to run a subset). Ends with the line
# "N passed, M failed"; exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v python3 >/dev/null; then
  echo "e2e: installing python3 (the suite's driver)" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3
fi
exec python3 tests/e2e/e2e.py "$@"

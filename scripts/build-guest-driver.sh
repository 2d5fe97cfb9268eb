#!/usr/bin/env bash
# Builds the guest kernel module guest-driver/dsproxy_oss.ko against a Debian guest kernel's
# headers (unpacked by scripts/fetch-kernels.sh) into build/guest-driver/<flavor>/dsproxy_oss.ko.
#
# Usage: scripts/build-guest-driver.sh FLAVOR [FLAVOR...]   (FLAVOR: see scripts/flavors.sh:
#                                                             6.1 6.12 5.10 6.1-686)
#
# The sources are copied into build/guest-driver/<flavor>/obj so flavors can build at the same
# time and guest-driver/ stays free of build products. The build uses W=1 (and sparse, C=1, if
# installed) and fails on any warning: from our sources, from modpost (e.g. an undefined
# symbol such as a 64-bit division helper on 32-bit), or from the compiler anywhere. gcc-12
# (the compiler Debian built bookworm's kernels with; bullseye's 5.10 was built with gcc-10,
# which bookworm does not have — gcc-12 builds for it without a warning) and pahole come from
# scripts/setup-host.sh. The 32-bit 6.1-686 flavor builds with the same amd64 gcc-12 and
# ARCH=x86: the kernel's configuration (CONFIG_X86_32) makes its Makefiles pass -m32 and link
# with -m elf_i386. Each build's log is build/guest-driver/<flavor>/build.log, and
# build/guest-driver/<flavor>/warnings the number of warning lines in it (0).
# DSPROXY_BUILD_DIR overrides the output root (default: <repo>/build).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${DSPROXY_BUILD_DIR:-$repo_root/build}"
src_dir="$repo_root/guest-driver"
# shellcheck source=scripts/flavors.sh
. "$repo_root/scripts/flavors.sh"

log() { echo "build-guest-driver: $*" >&2; }
die() { echo "build-guest-driver: error: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: $0 FLAVOR [FLAVOR...]   (FLAVOR: $DSPROXY_FLAVORS_TEXT)"

for tool in make gcc-12 pahole; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/setup-host.sh)"
done

build_flavor() {
  local flavor="$1"
  flavor_known "$flavor" || die "unknown flavor '$flavor' (known: $DSPROXY_FLAVORS_TEXT)"
  local kdir="$build_dir/kernels/$flavor"
  if [ ! -f "$kdir/.done" ]; then
    log "$flavor: kernel headers not unpacked yet; running scripts/fetch-kernels.sh $flavor"
    "$repo_root/scripts/fetch-kernels.sh" "$flavor"
  fi
  [ -f "$kdir/KVER" ] || die "$flavor: $kdir/KVER missing"
  local kver
  kver="$(cat "$kdir/KVER")"
  local headers="$kdir/root/usr/src/linux-headers-$kver"
  [ -f "$headers/Makefile" ] || die "$flavor: no headers at $headers"

  local out="$build_dir/guest-driver/$flavor"
  local obj="$out/obj"
  mkdir -p "$out"
  # Test suites build in parallel; one build per flavor at a time (fd 9 stays open until
  # this function's subshell ends).
  exec 9>"$out/.lock"
  flock 9
  # A fresh tree every time (a few seconds): no stale objects or half-written .cmd files.
  rm -rf "$obj"
  mkdir -p "$obj"
  cp "$src_dir"/*.c "$src_dir"/*.h "$src_dir"/Makefile "$obj/"

  # sparse (C=1) checks the __le32/__user annotations when it is installed
  local check=()
  if command -v sparse >/dev/null 2>&1; then
    check=(C=1)
  else
    log "$flavor: sparse not installed, skipping the static check"
  fi
  # ARCH: x86 covers both widths (the configuration decides); without it kbuild derives
  # x86_64 from this host's uname, which is only right for the amd64 flavors.
  log "$flavor: building against $kver ($(flavor_arch "$flavor"))"
  local logf="$out/build.log"
  rm -f "$out/warnings"
  if ! make -C "$headers" M="$obj" ARCH=x86 CC=gcc-12 HOSTCC=gcc-12 W=1 "${check[@]}" modules >"$logf" 2>&1; then
    cat "$logf" >&2
    die "$flavor: build failed (log: $logf)"
  fi
  # Any warning fails the build: the compiler's (ours or in a kernel header we include),
  # sparse's, and modpost's ("WARNING: modpost: ... undefined!").
  local warnings
  warnings="$(grep -ciE "(^|[^a-z])warning[: ]" "$logf" || true)"
  echo "$warnings" >"$out/warnings"
  if [ "$warnings" -ne 0 ]; then
    grep -iE "(^|[^a-z])warning[: ]" "$logf" >&2
    die "$flavor: $warnings warning line(s) in the build (log: $logf)"
  fi
  # rename: a reader of dsproxy_oss.ko never sees a half-copied file
  cp "$obj/dsproxy_oss.ko" "$out/.dsproxy_oss.ko.tmp"
  mv -f "$out/.dsproxy_oss.ko.tmp" "$out/dsproxy_oss.ko"
  echo "$kver" >"$out/KVER"
  log "$flavor: $out/dsproxy_oss.ko ($(modinfo -F vermagic "$out/dsproxy_oss.ko" 2>/dev/null || echo "vermagic ?"))"
}

for f in "$@"; do
  ( build_flavor "$f" )
done

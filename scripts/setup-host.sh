#!/usr/bin/env bash
# Installs everything the build, the tests and the demo need on a fresh Debian bookworm host.
# Idempotent: a second run only checks. Needs root (or sudo) for apt-get.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_pkgs=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# QEMU 10 (vhost-user-snd-pci) is only in bookworm-backports.
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "setup: adding bookworm-backports to apt sources"
  echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/dsproxy-backports.list >/dev/null
fi

for p in pkg-config libasound2-dev build-essential gcc-12 dwarves busybox-static cpio xz-utils zstd kmod curl ca-certificates; do
  have "$p" || need_pkgs+=("$p")
done
# gcc-multilib: the 32-bit (i386) static guest programs, for the 6.1-686 guest and for the
# 32-bit-program-on-64-bit-kernel checks (images/progs, gcc -m32 -static).
have gcc-multilib || need_pkgs+=(gcc-multilib)
# Real OSS programs for the end-to-end suite's "apps" boot: images/build-initramfs.sh
# --host-prog copies them (with their libraries and OSS plugins) into the guest, and the host
# copies make the inputs (sox, lame, oggenc) and the expected PCM (mpg123 -s, oggdec).
# sox's OSS driver is its own package (libsox-fmt-oss); ogg123 plays through libao, whose
# OSS plugin is in libao4 (a dependency of vorbis-tools).
for p in sox libsox-fmt-oss mpg123 lame vorbis-tools; do
  have "$p" || need_pkgs+=("$p")
done
# scripts/bench-verdict times its runs with GNU time and adds them up with bc.
for p in time bc; do
  have "$p" || need_pkgs+=("$p")
done
# The end-to-end driver (tests/e2e) and the benchmarks' tables are python3 (standard library only).
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)

qemu_ok=0
if command -v qemu-system-x86_64 >/dev/null 2>&1 && qemu-system-x86_64 -device help 2>/dev/null | grep -q vhost-user-snd-pci; then
  qemu_ok=1
fi

# QEMU's D-Bus display and audio (audio-dbus.so, ui-dbus.so) for dsproxy-host-reader --qmp and
# the emulated-card end-to-end boots: in qemu-system-modules-opengl, also from backports.
dbus_ok=0
if have qemu-system-modules-opengl; then dbus_ok=1; fi

if [ ${#need_pkgs[@]} -gt 0 ] || [ $qemu_ok -eq 0 ] || [ $dbus_ok -eq 0 ]; then
  echo "setup: apt-get update"
  $SUDO apt-get update -qq
  if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "setup: installing ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
  fi
  if [ $qemu_ok -eq 0 ]; then
    echo "setup: installing qemu-system-x86 from bookworm-backports"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports qemu-system-x86 qemu-system-data ipxe-qemu seabios ovmf
  fi
  if [ $dbus_ok -eq 0 ]; then
    echo "setup: installing qemu-system-modules-opengl (QEMU's D-Bus audio) from bookworm-backports"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports qemu-system-modules-opengl
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install a stable Rust toolchain (rustup) first" >&2
  exit 1
fi
echo "setup: host ready ($(qemu-system-x86_64 --version | head -1))"

#!/usr/bin/env bash
# Downloads and unpacks (never installs) the Debian guest kernels the tests boot
# (the flavors are listed in scripts/flavors.sh):
#   6.1      bookworm's newest linux-image-6.1.0-NN-amd64 (no virtio_snd: driver-less baseline)
#   6.12     bookworm-backports' linux-image-6.12.*+deb12-amd64 (virtio_snd, snd-pcm-oss, ctl
#            elements)
#   5.10     Debian 11 bullseye's newest linux-image-5.10.0-NN-amd64 (older than virtio_snd,
#            which arrived in 5.13)
#   6.1-686  bookworm's 32-bit linux-image-6.1.0-NN-686 (i386) and busybox-static:i386 for its
#            userspace (build/kernels/6.1-686/busybox). Its modules are built with the amd64
#            linux-kbuild-6.1 of the same version: the tools run on this host, the kernel's own
#            Makefiles pass -m32.
# For each: linux-image, linux-headers-KVER, linux-headers-…-common and linux-kbuild-… are
# `apt-get download`ed into build/kernels/<flavor>/debs/ and `dpkg -x`ed into one tree,
# build/kernels/<flavor>/root/, so out-of-tree modules build against
# build/kernels/<flavor>/root/usr/src/linux-headers-KVER.
# 6.1 and 6.12 come from the host's apt sources (bookworm, bookworm-backports). 5.10 and 6.1-686
# need a suite and an architecture this host does not use: they are looked up in a private apt
# configuration, build/kernels/.apt/ (its own sources.list — bullseye amd64, bookworm amd64 +
# i386 — and its own package lists), so the host's apt setup is never changed.
# Outputs: build/kernels/<flavor>/{root/,KVER,ARCH,vmlinux,.done}. Cached: a flavor with .done
# is skipped (nothing downloaded, no apt-get update). vmlinux is the uncompressed kernel (PVH
# entry) that guest-run.sh boots when present.
#
# Usage: scripts/fetch-kernels.sh [FLAVOR...]        (default: 6.1 6.12)
# Overrides (exact uname -r strings; the packages are derived from them):
#   DSPROXY_KVER_6_1=6.1.0-56-amd64  DSPROXY_KVER_6_12=6.12.95+deb12-amd64
#   DSPROXY_KVER_5_10=5.10.0-35-amd64  DSPROXY_KVER_6_1_686=6.1.0-44-686
# DSPROXY_DEBIAN_MIRROR (default http://deb.debian.org) is the private configuration's mirror.
# DSPROXY_BUILD_DIR overrides the output root (default: <repo>/build).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${DSPROXY_BUILD_DIR:-$repo_root/build}"
kernels_dir="$build_dir/kernels"
# shellcheck source=scripts/flavors.sh
. "$repo_root/scripts/flavors.sh"

log() { echo "fetch-kernels: $*" >&2; }
die() { echo "fetch-kernels: error: $*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg dpkg-deb depmod flock readelf xz zstd; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/setup-host.sh)"
done

# ---- apt: the host's configuration, or the private one -------------------------------------
# Every apt-get/apt-cache call goes through apt_tool, which adds the private configuration's
# options while a flavor that needs it is fetched (apt_private=1).
apt_private=0
private_dir="$kernels_dir/.apt"
private_opts=(
  -o "Dir::Etc::SourceList=$private_dir/sources.list"
  -o "Dir::Etc::SourceParts=$private_dir/sources.list.d"
  -o "Dir::Etc::Preferences=$private_dir/preferences"
  -o "Dir::Etc::PreferencesParts=$private_dir/preferences.d"
  -o "Dir::State::Lists=$private_dir/lists"
  -o "Dir::State::status=$private_dir/status"
  -o "Dir::Cache=$private_dir/cache"
  -o "APT::Architecture=amd64"
  -o "APT::Architectures::=amd64"
  -o "APT::Architectures::=i386"
  -o "Acquire::Languages=none"
)
apt_tool() { # apt-get|apt-cache ARGS...
  local tool="$1"
  shift
  if [ "$apt_private" -eq 1 ]; then
    "$tool" "${private_opts[@]}" "$@"
  else
    "$tool" "$@"
  fi
}

# The private configuration: bullseye (amd64) for 5.10; bookworm amd64 + i386 for 6.1-686 (i386
# for the kernel and busybox, amd64 for the linux-kbuild of the same version). Signed with the
# host's debian-archive-keyring, which holds bullseye's keys too.
private_setup() {
  local mirror="${DSPROXY_DEBIAN_MIRROR:-http://deb.debian.org}"
  local key=/usr/share/keyrings/debian-archive-keyring.gpg want
  [ -f "$key" ] || die "$key missing (apt-get install debian-archive-keyring)"
  mkdir -p "$private_dir"/{sources.list.d,preferences.d,lists/partial,cache/archives/partial}
  : >"$private_dir/preferences"
  [ -f "$private_dir/status" ] || : >"$private_dir/status"
  want="deb [arch=amd64 signed-by=$key] $mirror/debian bullseye main
deb [arch=amd64 signed-by=$key] $mirror/debian-security bullseye-security main
deb [arch=amd64,i386 signed-by=$key] $mirror/debian bookworm main
deb [arch=amd64,i386 signed-by=$key] $mirror/debian bookworm-updates main
deb [arch=amd64,i386 signed-by=$key] $mirror/debian-security bookworm-security main"
  if [ "$(cat "$private_dir/sources.list" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" >"$private_dir/sources.list"
    # another mirror or suite set: the old lists do not describe it
    find "$private_dir/lists" -maxdepth 1 -type f -delete
  fi
}

# Package lists older than a week (or missing) are refreshed once per run and configuration;
# `apt-get download` of a version the mirror no longer carries fails otherwise.
declare -A apt_lists_refreshed=()
refresh_apt_lists() {
  [ -n "${apt_lists_refreshed[$apt_private]:-}" ] && return 0
  apt_lists_refreshed[$apt_private]=1
  if [ "$apt_private" -eq 1 ]; then
    # Lists of our own, no root needed. A mirror caught mid-sync fails one index now and then
    # ("File has unexpected size"): carry on with the others; the package look-ups that follow
    # say what is missing.
    log "apt-get update (private lists: bullseye amd64, bookworm amd64+i386 in $private_dir)"
    apt_tool apt-get update -qq >&2 || log "apt-get update reported errors (above); going on with the lists it got"
    return 0
  fi
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "apt-get update"
  $sudo apt-get update -qq || die "apt-get update failed"
}
lists_stale() {
  local dir=/var/lib/apt/lists newest
  [ "$apt_private" -eq 1 ] && dir="$private_dir/lists"
  newest="$(find "$dir" -maxdepth 1 -name '*_Packages*' -mtime -7 2>/dev/null | head -1)"
  [ -z "$newest" ]
}

# Prints "KVER VERSION" for the newest META metapackage (linux-headers-amd64,
# linux-headers-686:i386) whose version starts with "SERIES." (the metapackage's Depends names
# the exact versioned headers package).
discover_kver() { # SERIES META
  local series="$1" meta="$2" best_ver="" best_dep="" ver="" dep=""
  while IFS= read -r line; do
    case "$line" in
      Version:\ *) ver="${line#Version: }" ;;
      Depends:\ *) dep="${line#Depends: }" ;;
      "")
        if [[ -n "$ver" && "$ver" == "$series".* ]]; then
          if [ -z "$best_ver" ] || dpkg --compare-versions "$ver" gt "$best_ver"; then
            best_ver="$ver"; best_dep="$dep"
          fi
        fi
        ver=""; dep="" ;;
    esac
  done < <(apt_tool apt-cache show "$meta" 2>/dev/null; echo)
  [ -n "$best_ver" ] || return 1
  # best_dep: "linux-headers-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1)"
  local pkg pkg_ver
  pkg="$(sed -E 's/^(linux-headers-[^ ,]+).*/\1/' <<<"$best_dep")"
  pkg_ver="$(sed -nE 's/.*\(= ([^)]+)\).*/\1/p' <<<"$best_dep")"
  [ -n "$pkg" ] && [ -n "$pkg_ver" ] || return 1
  echo "${pkg#linux-headers-} $pkg_ver"
}

# Newest available version of an exact package name (NAME or NAME:ARCH).
newest_version() {
  local best="" v
  for v in $(apt_tool apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}'); do
    if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best="$v"; fi
  done
  [ -n "$best" ] && echo "$best"
}

# Field of one exact package version, e.g. pkg_field linux-headers-X 1.2-3 Depends
pkg_field() {
  apt_tool apt-cache show "$1=$2" 2>/dev/null | awk -v f="$3:" '$1 == f { sub(/^[^:]*: /, ""); print; exit }'
}
# Rewrites absolute symlinks under $1 that point into /usr/src or /usr/lib (the headers'
# scripts/ and tools/ links into linux-kbuild, the -amd64 tree's links into -common) so they
# resolve inside the unpacked tree instead of on the host.
relink_into_tree() {
  local root="$1" link target rel
  while IFS= read -r -d '' link; do
    target="$(readlink "$link")"
    case "$target" in
      /usr/src/*|/usr/lib/*|/lib/*)
        rel="$(realpath -m --relative-to="$(dirname "$link")" "$root$target")"
        ln -sfn "$rel" "$link" ;;
    esac
  done < <(find "$root/usr/src" "$root/lib/modules" "$root/usr/lib/modules" -type l -print0 2>/dev/null)
}

# Writes $out/vmlinux, the uncompressed ELF kernel found inside vmlinuz, if it carries the PVH
# entry note (XEN_ELFNOTE_PHYS32_ENTRY, 0x12): QEMU boots such an ELF directly, which skips the
# boot stub's decompression -- about 3 s for the xz-compressed 6.1 kernel under TCG.
extract_vmlinux() {
  local out="$1" kver="$2" vmlinuz magic offset tmp
  vmlinuz="$out/root/boot/vmlinuz-$kver"
  tmp="$out/vmlinux.tmp"
  for magic in '\xfd7zXZ\x00:xz -dc' '\x28\xb5\x2f\xfd:zstd -dcq' '\x1f\x8b\x08:gzip -dc'; do
    for offset in $(LC_ALL=C grep -aboP "${magic%%:*}" "$vmlinuz" 2>/dev/null | head -5 | cut -d: -f1); do
      tail -c +"$((offset + 1))" "$vmlinuz" | ${magic#*:} >"$tmp" 2>/dev/null || true
      if [ "$(head -c 4 "$tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] &&
        readelf -n "$tmp" 2>/dev/null | grep -q '(0x00000012)'; then
        mv -f "$tmp" "$out/vmlinux"
        log "$flavor: extracted vmlinux (PVH) from vmlinuz-$kver"
        return 0
      fi
    done
  done
  rm -f "$tmp"
  log "$flavor: no PVH-bootable vmlinux inside vmlinuz-$kver; guests boot the bzImage"
}

# Where a flavor's packages come from: "SERIES META APT ARCH" (APT: host or private; ARCH: the
# kernel's Debian architecture).
flavor_source() {
  case "$1" in
    6.1) echo "6.1 linux-headers-amd64 host amd64" ;;
    6.12) echo "6.12 linux-headers-amd64 host amd64" ;;
    5.10) echo "5.10 linux-headers-amd64 private amd64" ;;
    6.1-686) echo "6.1 linux-headers-686:i386 private i386" ;;
    *) return 1 ;;
  esac
}

fetch_flavor() {
  local flavor="$1"
  local out="$kernels_dir/$flavor"
  local series meta apt arch
  read -r series meta apt arch <<<"$(flavor_source "$flavor")"
  if [ -f "$out/.done" ]; then
    [ -f "$out/vmlinux" ] || [ -f "$out/.no-vmlinux" ] ||
      { extract_vmlinux "$out" "$(cat "$out/KVER")"; [ -f "$out/vmlinux" ] || touch "$out/.no-vmlinux"; }
    log "$flavor: cached ($(cat "$out/KVER"))"
    return 0
  fi

  apt_private=0
  if [ "$apt" = private ]; then
    apt_private=1
    private_setup
  fi
  local q=""
  [ "$arch" = amd64 ] || q=":$arch"
  local override_var="DSPROXY_KVER_${flavor//[.-]/_}"
  local kver="${!override_var:-}" version=""
  if lists_stale; then refresh_apt_lists; fi
  if [ -n "$kver" ]; then
    version="$(newest_version "linux-headers-$kver$q")" || {
      refresh_apt_lists; version="$(newest_version "linux-headers-$kver$q")"; } ||
      die "$override_var=$kver: no package linux-headers-$kver$q in apt lists"
  else
    local found
    found="$(discover_kver "$series" "$meta")" || { refresh_apt_lists; found="$(discover_kver "$series" "$meta")"; } ||
      die "$flavor: no $meta version $series.* in apt lists ($([ "$apt" = private ] && echo "private lists in $private_dir: is deb.debian.org reachable?" || echo "is bookworm-backports enabled? run scripts/setup-host.sh"))"
    read -r kver version <<<"$found"
  fi

  local headers_pkg="linux-headers-$kver" image_pkg="linux-image-$kver"
  local depends common_pkg kbuild_pkg
  depends="$(pkg_field "$headers_pkg$q" "$version" Depends)"
  common_pkg="$(grep -oE 'linux-headers-[^ ,]+-common' <<<"$depends" | head -1)"
  kbuild_pkg="$(grep -oE 'linux-kbuild-[^ ,]+' <<<"$depends" | head -1)"
  [ -n "$common_pkg" ] || die "$headers_pkg=$version: no -common package in Depends: $depends"
  [ -n "$kbuild_pkg" ] || die "$headers_pkg=$version: no linux-kbuild package in Depends: $depends"

  log "$flavor: KVER=$kver version=$version arch=$arch"
  rm -rf "$out"
  mkdir -p "$out/debs" "$out/root"
  # The kbuild tools (fixdep, modpost...) run on this host: always amd64, same version.
  local pkgs=("$image_pkg$q=$version" "$headers_pkg$q=$version" "$common_pkg=$version"
    "$kbuild_pkg:amd64=$version")
  local busybox_ver=""
  if [ "$arch" != amd64 ]; then
    # The guest's userspace must be of the kernel's architecture (a 32-bit kernel runs no
    # x86-64 program): the busybox the initramfs is built around comes from the same suite.
    busybox_ver="$(newest_version "busybox-static$q")" ||
      die "$flavor: no busybox-static$q in the apt lists"
    pkgs+=("busybox-static$q=$busybox_ver")
  fi
  log "$flavor: apt-get download ${pkgs[*]}"
  # apt-get download writes into the current directory; as root it warns about the unsandboxed
  # download, which is harmless here.
  (cd "$out/debs" && apt_tool apt-get download -q "${pkgs[@]}" 2> >(grep -v 'unsandboxed' >&2)) ||
    die "$flavor: apt-get download failed"

  local deb
  for deb in "$out"/debs/*.deb; do
    case "$(basename "$deb")" in
      busybox-static_*)
        # its own tree: only /bin/busybox is wanted, the kernel tree stays the packages' own
        log "$flavor: dpkg -x $(basename "$deb") (busybox for the guest)"
        dpkg -x "$deb" "$out/busybox-root"
        [ -x "$out/busybox-root/bin/busybox" ] || die "$flavor: no bin/busybox in $(basename "$deb")"
        mv -f "$out/busybox-root/bin/busybox" "$out/busybox"
        rm -rf "$out/busybox-root"
        continue ;;
    esac
    log "$flavor: dpkg -x $(basename "$deb")"
    dpkg -x "$deb" "$out/root"
  done

  relink_into_tree "$out/root"

  # The -amd64/-686 headers' top Makefile includes the -common tree's Makefile by absolute path
  # (/usr/src/linux-headers-…-common/Makefile): point it at the unpacked copy.
  local hdr="$out/root/usr/src/linux-headers-$kver"
  local common_dir="linux-headers-${common_pkg#linux-headers-}"
  [ -f "$hdr/Makefile" ] || die "$flavor: $hdr/Makefile missing after unpack"
  sed -i "s#/usr/src/linux-headers-#$out/root/usr/src/linux-headers-#g" "$hdr/Makefile"
  grep -qF "$out/root/usr/src/$common_dir/Makefile" "$hdr/Makefile" ||
    die "$flavor: could not repoint $hdr/Makefile at $common_dir: $(cat "$hdr/Makefile")"
  [ -f "$out/root/usr/src/$common_dir/Makefile" ] || die "$flavor: $common_dir/Makefile missing"

  # Modules may be under lib/modules or usr/lib/modules; depmod -b looks in ROOT/lib/modules.
  if [ ! -d "$out/root/lib/modules/$kver" ] && [ -d "$out/root/usr/lib/modules/$kver" ]; then
    mkdir -p "$out/root/lib/modules"
    ln -sfn "../../usr/lib/modules/$kver" "$out/root/lib/modules/$kver"
  fi
  [ -d "$out/root/lib/modules/$kver/kernel" ] || die "$flavor: no modules for $kver after unpack"
  depmod -b "$out/root" "$kver" || die "$flavor: depmod failed"
  [ -f "$out/root/boot/vmlinuz-$kver" ] || die "$flavor: no vmlinuz-$kver after unpack"

  extract_vmlinux "$out" "$kver"
  [ -f "$out/vmlinux" ] || touch "$out/.no-vmlinux"

  echo "$kver" >"$out/KVER"
  echo "$arch" >"$out/ARCH"
  touch "$out/.done"
  log "$flavor: ready: $out (vmlinuz: root/boot/vmlinuz-$kver, headers: root/usr/src/linux-headers-$kver)"
}

# Parallel callers (test runs booting guests) must not unpack the same flavor twice at once.
mkdir -p "$kernels_dir"
exec 9>"$kernels_dir/.lock"
flock 9

flavors=("$@")
[ ${#flavors[@]} -gt 0 ] || flavors=(6.1 6.12)
for f in "${flavors[@]}"; do
  flavor_known "$f" || die "unknown flavor '$f' (known: $DSPROXY_FLAVORS_TEXT)"
done
for f in "${flavors[@]}"; do
  fetch_flavor "$f"
done

#!/usr/bin/env bash
# Downloads and unpacks (never installs) the two Debian guest kernels the tests boot:
#   6.1   Debian bookworm's newest linux-image-6.1.0-NN-amd64 (no virtio_snd: driver-less baseline)
#   6.12  bookworm-backports' linux-image-6.12.*+deb12-amd64 (virtio_snd, snd-pcm-oss, ctl elements)
# For each: linux-image, linux-headers-KVER, linux-headers-…-common and linux-kbuild-… are
# `apt-get download`ed into build/kernels/<flavor>/debs/ and `dpkg -x`ed into one tree,
# build/kernels/<flavor>/root/, so out-of-tree modules build against
# build/kernels/<flavor>/root/usr/src/linux-headers-KVER.
# Outputs: build/kernels/<flavor>/{root/,KVER,vmlinux,.done}. Cached: a flavor with .done is
# skipped. vmlinux is the uncompressed kernel (PVH entry) that guest-run.sh boots when present.
#
# Usage: scripts/fetch-kernels.sh [FLAVOR...]        (default: 6.1 6.12)
# Overrides (exact uname -r strings; the packages are derived from them):
#   DSPROXY_KVER_6_1=6.1.0-56-amd64  DSPROXY_KVER_6_12=6.12.95+deb12-amd64
# DSPROXY_BUILD_DIR overrides the output root (default: <repo>/build).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${DSPROXY_BUILD_DIR:-$repo_root/build}"
kernels_dir="$build_dir/kernels"

log() { echo "fetch-kernels: $*" >&2; }
die() { echo "fetch-kernels: error: $*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg dpkg-deb depmod flock readelf xz zstd; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/setup-host.sh)"
done

# Package lists older than a week (or missing) are refreshed once; `apt-get download` of a
# version the mirror no longer carries fails otherwise.
apt_lists_refreshed=0
refresh_apt_lists() {
  [ "$apt_lists_refreshed" -eq 1 ] && return 0
  apt_lists_refreshed=1
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "apt-get update"
  $sudo apt-get update -qq || die "apt-get update failed"
}
lists_stale() {
  local newest
  newest="$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mtime -7 2>/dev/null | head -1)"
  [ -z "$newest" ]
}

# Prints "KVER VERSION" for the newest linux-headers-amd64 metapackage whose version starts with
# "$flavor." (the metapackage's Depends names the exact versioned headers package).
discover_kver() {
  local flavor="$1" best_ver="" best_dep="" ver="" dep=""
  while IFS= read -r line; do
    case "$line" in
      Version:\ *) ver="${line#Version: }" ;;
      Depends:\ *) dep="${line#Depends: }" ;;
      "")
        if [[ -n "$ver" && "$ver" == "$flavor".* ]]; then
          if [ -z "$best_ver" ] || dpkg --compare-versions "$ver" gt "$best_ver"; then
            best_ver="$ver"; best_dep="$dep"
          fi
        fi
        ver=""; dep="" ;;
    esac
  done < <(apt-cache show linux-headers-amd64 2>/dev/null; echo)
  [ -n "$best_ver" ] || return 1
  # best_dep: "linux-headers-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1)"
  local pkg pkg_ver
  pkg="$(sed -E 's/^(linux-headers-[^ ,]+).*/\1/' <<<"$best_dep")"
  pkg_ver="$(sed -nE 's/.*\(= ([^)]+)\).*/\1/p' <<<"$best_dep")"
  [ -n "$pkg" ] && [ -n "$pkg_ver" ] || return 1
  echo "${pkg#linux-headers-} $pkg_ver"
}

# Newest available version of an exact package name.
newest_version() {
  local best="" v
  for v in $(apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}'); do
    if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best="$v"; fi
  done
  [ -n "$best" ] && echo "$best"
}

# Field of one exact package version, e.g. pkg_field linux-headers-X 1.2-3 Depends
pkg_field() {
  apt-cache show "$1=$2" 2>/dev/null | awk -v f="$3:" '$1 == f { sub(/^[^:]*: /, ""); print; exit }'
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

fetch_flavor() {
  local flavor="$1"
  local out="$kernels_dir/$flavor"
  if [ -f "$out/.done" ]; then
    [ -f "$out/vmlinux" ] || [ -f "$out/.no-vmlinux" ] ||
      { extract_vmlinux "$out" "$(cat "$out/KVER")"; [ -f "$out/vmlinux" ] || touch "$out/.no-vmlinux"; }
    log "$flavor: cached ($(cat "$out/KVER"))"
    return 0
  fi

  local override_var="DSPROXY_KVER_${flavor//./_}"
  local kver="${!override_var:-}" version=""
  if lists_stale; then refresh_apt_lists; fi
  if [ -n "$kver" ]; then
    version="$(newest_version "linux-headers-$kver")" || {
      refresh_apt_lists; version="$(newest_version "linux-headers-$kver")"; } ||
      die "$override_var=$kver: no package linux-headers-$kver in apt lists"
  else
    local found
    found="$(discover_kver "$flavor")" || { refresh_apt_lists; found="$(discover_kver "$flavor")"; } ||
      die "$flavor: no linux-headers-amd64 version $flavor.* in apt lists (is bookworm-backports enabled? run scripts/setup-host.sh)"
    read -r kver version <<<"$found"
  fi

  local headers_pkg="linux-headers-$kver" image_pkg="linux-image-$kver"
  local depends common_pkg kbuild_pkg
  depends="$(pkg_field "$headers_pkg" "$version" Depends)"
  common_pkg="$(grep -oE 'linux-headers-[^ ,]+-common' <<<"$depends" | head -1)"
  kbuild_pkg="$(grep -oE 'linux-kbuild-[^ ,]+' <<<"$depends" | head -1)"
  [ -n "$common_pkg" ] || die "$headers_pkg=$version: no -common package in Depends: $depends"
  [ -n "$kbuild_pkg" ] || die "$headers_pkg=$version: no linux-kbuild package in Depends: $depends"

  log "$flavor: KVER=$kver version=$version"
  rm -rf "$out"
  mkdir -p "$out/debs" "$out/root"
  local pkgs=("$image_pkg=$version" "$headers_pkg=$version" "$common_pkg=$version" "$kbuild_pkg=$version")
  log "$flavor: apt-get download ${pkgs[*]}"
  # apt-get download writes into the current directory; as root it warns about the unsandboxed
  # download, which is harmless here.
  (cd "$out/debs" && apt-get download -q "${pkgs[@]}" 2> >(grep -v 'unsandboxed' >&2)) ||
    die "$flavor: apt-get download failed"

  local deb
  for deb in "$out"/debs/*.deb; do
    log "$flavor: dpkg -x $(basename "$deb")"
    dpkg -x "$deb" "$out/root"
  done

  relink_into_tree "$out/root"

  # The -amd64 headers' top Makefile includes the -common tree's Makefile by absolute path
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
  case "$f" in
    6.1|6.12) fetch_flavor "$f" ;;
    *) die "unknown flavor '$f' (known: 6.1 6.12)" ;;
  esac
done

#!/usr/bin/env bash
# Builds the test guest's initramfs (cpio.gz): busybox-static, images/init.sh as /init, the
# guest test programs (images/progs, statically linked), the kernel modules of the stock
# virtio_snd + OSS-emulation path and, with --module, our own module(s) plus their dependencies.
#
# Usage: images/build-initramfs.sh FLAVOR OUT [--module PATH.ko]... [--prog PATH]...
#                   [--file SRC=/DEST]... [--host-prog /PATH]... [--host-lib /PATH]...
#   FLAVOR      6.1, 6.12, 5.10 or 6.1-686 (scripts/flavors.sh: a kernel unpacked by
#               scripts/fetch-kernels.sh; fetched if missing). The 32-bit 6.1-686 gets an i386
#               userspace: busybox-static:i386 (fetched with the kernel) and the i386 builds
#               of images/progs (build/progs/guest32/)
#   OUT         where to write the cpio.gz
#   --module    an out-of-tree module for dsproxy.driver=ours (vermagic must match the kernel)
#   --prog      an extra program, installed as /bin/<basename> (must be static)
#   --file      an extra file, installed at /DEST
#   --host-prog a dynamically linked program of this (Debian bookworm, x86-64) host, e.g. /usr/bin/sox,
#               installed at the same path with the shared libraries and ELF interpreter ldd
#               resolves for it, each at the path ldd names
#   --host-lib  a shared object a program loads at run time (a plugin, e.g.
#               /usr/lib/x86_64-linux-gnu/sox/libsox_fmt_oss.so), or a directory of them
#               (every *.so* below it), installed at the same path(s) with their libraries
# Images are cached by content hash in build/images/; a rebuild with the same inputs is a copy.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${DSPROXY_BUILD_DIR:-$repo_root/build}"
images_dir="$build_dir/images"
progs_out="$build_dir/progs"

die() { echo "build-initramfs: error: $*" >&2; exit 1; }
log() { echo "build-initramfs: $*" >&2; }
usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
# shellcheck source=scripts/flavors.sh
. "$repo_root/scripts/flavors.sh"

[ $# -ge 2 ] || usage
flavor="$1"; out="$2"; shift 2
flavor_known "$flavor" || die "unknown flavor '$flavor' ($DSPROXY_FLAVORS_TEXT)"
guest_arch="$(flavor_arch "$flavor")"

modules=(); progs=(); files=(); host_progs=(); host_libs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --module) [ $# -ge 2 ] || usage; modules+=("$2"); shift 2 ;;
    --prog) [ $# -ge 2 ] || usage; progs+=("$2"); shift 2 ;;
    --file) [ $# -ge 2 ] || usage; files+=("$2"); shift 2 ;;
    --host-prog) [ $# -ge 2 ] || usage; host_progs+=("$2"); shift 2 ;;
    --host-lib) [ $# -ge 2 ] || usage; host_libs+=("$2"); shift 2 ;;
    -h|--help) usage ;;
    *) die "unknown argument '$1'" ;;
  esac
done

for tool in cpio gzip xz depmod modinfo make gcc sha256sum flock; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/setup-host.sh)"
done
kdir="$build_dir/kernels/$flavor"
if [ ! -f "$kdir/.done" ]; then
  log "kernel $flavor not unpacked yet: running scripts/fetch-kernels.sh $flavor"
  "$repo_root/scripts/fetch-kernels.sh" "$flavor"
fi
# The guest's userspace is of the kernel's architecture: the host's busybox and the x86-64
# builds of the test programs for amd64 kernels, the flavor's own busybox-static:i386 and the
# gcc -m32 builds for the 32-bit one (this host runs it too: its applet list is read here).
if [ "$guest_arch" = amd64 ]; then
  busybox_bin=/bin/busybox
  progs_dir="$progs_out/guest"
else
  busybox_bin="$kdir/busybox"
  progs_dir="$progs_out/guest32"
  [ ${#host_progs[@]} -eq 0 ] && [ ${#host_libs[@]} -eq 0 ] ||
    die "--host-prog/--host-lib copy this host's x86-64 programs; the $flavor guest runs i386 ones"
fi
[ -x "$busybox_bin" ] || die "$busybox_bin not found (apt-get install busybox-static; for $flavor: scripts/fetch-kernels.sh $flavor)"
"$busybox_bin" --list-full >/dev/null 2>&1 || die "$busybox_bin is not a multi-call busybox"
kver="$(cat "$kdir/KVER")"
kroot="$kdir/root"
moddir="$kroot/lib/modules/$kver"
[ -f "$moddir/modules.dep" ] || die "$moddir/modules.dep missing (re-run scripts/fetch-kernels.sh)"

# Parallel test runs share build/: one make at a time.
mkdir -p "$build_dir"
flock "$build_dir/.progs.lock" make -s -C "$repo_root/images/progs" OUT="$progs_out" ||
  die "building images/progs failed"

# ---- module resolution ------------------------------------------------------------------
# Stock path, in load order (dependencies are added ahead of each module as needed).
stock_modules=(soundcore snd snd-timer snd-pcm virtio_snd snd-mixer-oss snd-pcm-oss)

# Module name -> path relative to $moddir ("" if builtin, exit 1 if absent).
mod_path() {
  local name="${1//-/_}" line
  if grep -qE "(^|/)${name//_/[-_]}\.ko$" "$moddir/modules.builtin" 2>/dev/null; then
    echo ""; return 0
  fi
  line="$(grep -E "(^|/)${name//_/[-_]}\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep" | head -1)"
  [ -n "$line" ] || return 1
  echo "${line%%:*}"
}
mod_deps() { # direct and indirect deps of a module path, from modules.dep
  grep -E "^$(printf '%s' "$1" | sed 's/[.+]/\\&/g'):" "$moddir/modules.dep" | cut -d: -f2-
}

# Appends $2 (a module path in the kernel tree) and its deps to the array named $1, deps first.
declare -A seen_stock=() seen_ours=()
add_with_deps() {
  local -n list="$1"; local -n seen="$2"; local path="$3" dep deps
  [ -n "${seen[$path]:-}" ] && return 0
  seen[$path]=1
  # modules.dep lists every (transitive) dependency; the last one has no deps of its own, so
  # loading them in reverse order is a valid load order. Recursing keeps it correct anyway.
  deps="$(mod_deps "$path")"
  for dep in $deps; do
    add_with_deps "$1" "$2" "$dep"
  done
  list+=("$path")
}

stock_list=(); stock_missing=()
for m in "${stock_modules[@]}"; do
  if p="$(mod_path "$m")"; then
    [ -n "$p" ] && add_with_deps stock_list seen_stock "$p"
  else
    stock_missing+=("$m")
  fi
done

# QEMU's own emulated cards (what Windows guests drive: the end-to-end suite's stand-in for
# them), each a set of its own, in load order. HDA: the controller driver probes the codecs
# at load and binds each to a codec driver then; with no modprobe in the guest it cannot ask
# for one, so the generic codec driver (what QEMU's hda-duplex/hda-output need) goes in first.
declare -A emulated_sets=(
  [ac97]="soundcore snd snd-timer snd-pcm ac97_bus snd-ac97-codec snd-intel8x0 snd-mixer-oss snd-pcm-oss"
  [hda]="soundcore snd snd-timer snd-pcm snd-hwdep snd-hda-core snd-hda-codec snd-hda-codec-generic snd-intel-sdw-acpi snd-intel-dspcfg snd-hda-intel snd-mixer-oss snd-pcm-oss"
)
declare -A emulated_lists=() emulated_missing=()
for es in "${!emulated_sets[@]}"; do
  declare -A seen_set=()
  set_list=(); set_missing=()
  for m in ${emulated_sets[$es]}; do
    if p="$(mod_path "$m")"; then
      [ -n "$p" ] && add_with_deps set_list seen_set "$p"
    else
      set_missing+=("$m")
    fi
  done
  emulated_lists[$es]="${set_list[*]}"
  emulated_missing[$es]="${set_missing[*]}"
  unset seen_set
done

ours_list=(); ours_missing=(); ours_extra=()
# Our module is a virtio driver: the virtio PCI transport must be there too. 6.12 builds it
# in; 6.1, 6.1-686 and 5.10 ship it as a module (virtio_pci + virtio_pci_{modern,legacy}_dev
# on 6.1), which nothing would load otherwise: no module lists it as a dependency.
if [ ${#modules[@]} -gt 0 ] && p="$(mod_path virtio_pci)" && [ -n "$p" ]; then
  add_with_deps ours_list seen_ours "$p"
fi
# Module name of a file: basename without .ko[.xz|.zst|.gz], dashes as underscores.
ko_name() { local b; b="$(basename "$1")"; b="${b%.xz}"; b="${b%.zst}"; b="${b%.gz}"; b="${b%.ko}"; echo "${b//-/_}"; }
for ko in "${modules[@]}"; do
  [ -f "$ko" ] || die "--module $ko: no such file"
  vermagic="$(modinfo -F vermagic "$ko" 2>/dev/null | awk '{print $1}')" ||
    die "--module $ko: modinfo failed (not a kernel module?)"
  [ "$vermagic" = "$kver" ] ||
    die "--module $ko: built for '$vermagic', this image's kernel is '$kver'"
  for dep in $(modinfo -F depends "$ko" | tr ',' ' '); do
    if p="$(mod_path "$dep")"; then
      [ -n "$p" ] && add_with_deps ours_list seen_ours "$p"
    else
      ours_missing+=("$dep")
    fi
  done
  # A --module that the set already holds (e.g. an explicit virtio_pci.ko from the kernel
  # tree) would be insmod-ed twice, and the second insmod fails.
  dup=0
  for p in "${ours_list[@]}"; do [ "$(ko_name "$p")" = "$(ko_name "$ko")" ] && dup=1; done
  [ "$dup" -eq 1 ] || ours_extra+=("$ko")
done
[ ${#ours_missing[@]} -eq 0 ] ||
  die "--module dependencies not in kernel $kver: ${ours_missing[*]}"

# ---- host programs and their libraries -----------------------------------------------------
# The guest userspace is what this host runs (Debian bookworm, x86-64): a host program works in
# the guest when its shared libraries and the ELF interpreter sit where ld.so looks for them.
# Without /etc/ld.so.cache, ld.so searches /lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu,
# /lib and /usr/lib, so each library goes to the path ldd resolved it to (on a merged-/usr host
# that is /lib/x86_64-linux-gnu/..., a plain directory in the image). Plugins (dlopen-ed from
# a directory compiled into the program) keep their own paths. ldd runs the host's own,
# trusted binaries (it executes their loader), never anything from the guest.
declare -A host_seen=()
host_list=() # absolute paths in the guest == paths on the host
host_add() { # PATH: one file, not followed by its dependencies
  [ -n "${host_seen[$1]:-}" ] && return 0
  host_seen[$1]=1
  host_list+=("$1")
}
host_add_with_libs() { # PATH (absolute): the file and every library ldd resolves for it
  local path="$1" out line lib
  [ -e "$path" ] || die "$path: no such file on this host (run scripts/setup-host.sh)"
  [ -f "$path" ] || die "$path: not a regular file"
  host_add "$path"
  # ldd exits 1 for a static program or a non-ELF file: then there is nothing to add.
  out="$(LC_ALL=C ldd "$path" 2>&1)" || {
    grep -qE "not a dynamic executable|statically linked" <<<"$out" && return 0
    die "ldd $path failed: $out"
  }
  if grep -q "not found" <<<"$out"; then
    die "ldd $path: $(grep "not found" <<<"$out" | head -1 | sed 's/^[[:space:]]*//')"
  fi
  while IFS= read -r line; do
    # "libX.so.N => /path (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)" (the interpreter),
    # "linux-vdso.so.1 (0x...)" (provided by the kernel: no file).
    lib="$(sed -nE 's/^[[:space:]]*([^[:space:]]+ => )?(\/[^[:space:]]+) \(0x[0-9a-f]+\)$/\2/p' <<<"$line")"
    [ -n "$lib" ] || continue
    [ -f "$lib" ] || die "ldd $path names $lib, which is not a file"
    host_add "$lib"
  done <<<"$out"
}
is_elf() { [ "$(LC_ALL=C head -c 4 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; }
abs_path() { # absolute without resolving symlinks: the guest gets the name the user gave
  case "$1" in /*) printf '%s\n' "$1" ;; *) realpath -s "$1" ;; esac
}
if [ ${#host_progs[@]} -gt 0 ] || [ ${#host_libs[@]} -gt 0 ]; then
  command -v ldd >/dev/null 2>&1 || die "ldd not found (package libc-bin)"
fi
for p in "${host_progs[@]}"; do
  ap="$(abs_path "$p")"
  [ -f "$ap" ] && [ -x "$ap" ] || die "--host-prog $p: not an executable file"
  is_elf "$ap" || die "--host-prog $p: not an ELF program (a script needs its interpreter too)"
  host_add_with_libs "$ap"
done
for p in "${host_libs[@]}"; do
  ap="$(abs_path "$p")"
  if [ -d "$ap" ]; then
    # Shared objects only (a plugin directory may hold .la files or data, and "*.so*" alone
    # would match ld.so.conf).
    found=0
    while IFS= read -r f; do
      is_elf "$f" || continue
      host_add_with_libs "$f"; found=1
    done < <(find "$ap" \( -type f -o -type l \) \( -name '*.so' -o -name '*.so.*' \) | LC_ALL=C sort)
    [ "$found" -eq 1 ] || die "--host-lib $p: no shared objects (*.so, *.so.N) in that directory"
  else
    [ -e "$ap" ] || die "--host-lib $p: no such file on this host (run scripts/setup-host.sh)"
    is_elf "$ap" || die "--host-lib $p: not an ELF shared object"
    host_add_with_libs "$ap"
  fi
done
# Sorted, so that the manifest (and thus the cache key) does not depend on argument order.
if [ ${#host_list[@]} -gt 0 ]; then
  mapfile -t host_list < <(printf '%s\n' "${host_list[@]}" | LC_ALL=C sort -u)
fi

# ---- content hash -------------------------------------------------------------------------
manifest="$(
  echo "format 1"
  echo "flavor $flavor kver $kver arch $guest_arch"
  sha256sum "${BASH_SOURCE[0]}" "$repo_root/images/init.sh" "$busybox_bin" | awk '{print $1}'
  for p in "${stock_list[@]}"; do echo "stock $p $(sha256sum <"$moddir/$p" | cut -c1-64)"; done
  echo "stock-missing ${stock_missing[*]}"
  for es in $(printf '%s\n' "${!emulated_sets[@]}" | LC_ALL=C sort); do
    for p in ${emulated_lists[$es]}; do echo "$es $p $(sha256sum <"$moddir/$p" | cut -c1-64)"; done
    echo "$es-missing ${emulated_missing[$es]}"
  done
  for p in "${ours_list[@]}"; do echo "ours-dep $p $(sha256sum <"$moddir/$p" | cut -c1-64)"; done
  for ko in "${ours_extra[@]}"; do echo "ours $(basename "$ko") $(sha256sum <"$ko" | cut -c1-64)"; done
  for p in "$progs_dir"/* "${progs[@]}"; do
    [ -f "$p" ] || { echo "missing-prog $p"; continue; }
    echo "prog $(basename "$p") $(sha256sum <"$p" | cut -c1-64)"
  done
  for f in "${files[@]}"; do
    src="${f%%=*}"; dest="${f#*=}"
    [ -f "$src" ] || { echo "missing-file $src"; continue; }
    echo "file $dest $(sha256sum <"$src" | cut -c1-64)"
  done
  for h in "${host_list[@]}"; do echo "host $h $(sha256sum <"$h" | cut -c1-64)"; done
)"
if grep -qE '^missing-(prog|file) ' <<<"$manifest"; then
  die "$(grep -E '^missing-(prog|file) ' <<<"$manifest" | sed 's/^missing-\(prog\|file\) /no such \1: /' | head -1)"
fi
hash="$(sha256sum <<<"$manifest" | cut -c1-16)"
cached="$images_dir/initramfs-$flavor-$hash.cpio.gz"

mkdir -p "$images_dir" "$(dirname "$out")"
if [ -f "$cached" ]; then
  log "cached $cached"
else
  stage="$(mktemp -d "$images_dir/stage.XXXXXX")"
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,root,etc/dsproxy,lib/modules/dsproxy}
  cp "$busybox_bin" "$stage/bin/busybox"
  while IFS= read -r applet; do
    case "$applet" in linuxrc|bin/busybox) continue ;; esac
    ln -sf /bin/busybox "$stage/$applet"
  done < <("$busybox_bin" --list-full)
  install -m 0755 "$repo_root/images/init.sh" "$stage/init"
  echo "$flavor" >"$stage/etc/dsproxy/flavor"
  echo "$kver" >"$stage/etc/dsproxy/kver"

  # Modules go in decompressed (no decompression support needed in the guest's insmod, and
  # nothing to unpack at boot under TCG), named <module>.ko.
  install_module() { # SRC -> prints the installed file name
    local src="$1" base
    base="$(basename "$src")"; base="${base%.xz}"; base="${base%.zst}"; base="${base%.gz}"
    case "$src" in
      *.xz) xz -dc "$src" >"$stage/lib/modules/dsproxy/$base" ;;
      *.zst) zstd -qdc "$src" >"$stage/lib/modules/dsproxy/$base" ;;
      *.gz) gzip -dc "$src" >"$stage/lib/modules/dsproxy/$base" ;;
      *) cp "$src" "$stage/lib/modules/dsproxy/$base" ;;
    esac
    echo "$base"
  }
  : >"$stage/etc/dsproxy/modules.stock"
  : >"$stage/etc/dsproxy/modules.ours"
  for p in "${stock_list[@]}"; do install_module "$moddir/$p" >>"$stage/etc/dsproxy/modules.stock"; done
  for p in "${ours_list[@]}"; do install_module "$moddir/$p" >>"$stage/etc/dsproxy/modules.ours"; done
  for ko in "${ours_extra[@]}"; do install_module "$ko" >>"$stage/etc/dsproxy/modules.ours"; done
  if [ ${#stock_missing[@]} -gt 0 ]; then echo "${stock_missing[*]}" >"$stage/etc/dsproxy/missing.stock"; fi
  for es in "${!emulated_sets[@]}"; do
    : >"$stage/etc/dsproxy/modules.$es"
    for p in ${emulated_lists[$es]}; do
      # A module already installed by another set is the same file: install_module rewrites it.
      install_module "$moddir/$p" >>"$stage/etc/dsproxy/modules.$es"
    done
    if [ -n "${emulated_missing[$es]}" ]; then echo "${emulated_missing[$es]}" >"$stage/etc/dsproxy/missing.$es"; fi
  done
  if [ ${#ours_extra[@]} -eq 0 ]; then echo "(no --module given)" >"$stage/etc/dsproxy/missing.ours"; fi

  for p in "$progs_dir"/* "${progs[@]}"; do
    install -m 0755 "$p" "$stage/bin/$(basename "$p")"
  done
  for f in "${files[@]}"; do
    src="${f%%=*}"; dest="${f#*=}"
    case "$dest" in /*) ;; *) die "--file $f: DEST must be absolute" ;; esac
    mkdir -p "$stage$(dirname "$dest")"
    cp "$src" "$stage$dest"
  done
  # Host files last: a library never replaces one of the above, but a program named like a
  # busybox applet replaces the applet's link (rm first: cp would write through the link
  # into /bin/busybox). Copied dereferenced: the guest gets files under the names ldd used.
  for h in "${host_list[@]}"; do
    mkdir -p "$stage$(dirname "$h")"
    rm -f "$stage$h"
    cp -L "$h" "$stage$h"
  done
  printf '%s\n' "$manifest" >"$stage/etc/dsproxy/manifest"

  tmp="$cached.tmp.$$"
  (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) |
    gzip -n -6 >"$tmp"
  mv -f "$tmp" "$cached"
  rm -rf "$stage"
  trap - EXIT
  log "built $cached ($(du -h "$cached" | cut -f1); stock: ${#stock_list[@]} modules${stock_missing[*]:+, missing: ${stock_missing[*]}}; ours: $((${#ours_list[@]} + ${#ours_extra[@]})) modules${host_list[*]:+; host files: ${#host_list[@]}})"
fi

if [ "$(realpath -m "$out")" != "$(realpath -m "$cached")" ]; then
  cp -f "$cached" "$out.tmp.$$" && mv -f "$out.tmp.$$" "$out"
fi
echo "$out"

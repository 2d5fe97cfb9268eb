#!/usr/bin/env bash
# Boots a test guest (a Debian kernel from scripts/fetch-kernels.sh + an initramfs from
# images/build-initramfs.sh) in QEMU, runs one program in it and exits with that program's exit
# status, read from the guest's "DSPROXY-GUEST: exit=N" console marker.
#
# Usage: scripts/guest-run.sh [options] [-- EXTRA QEMU ARGS...]
#   --flavor F                 guest kernel: 6.1, 6.12 (default), 5.10, 6.1-686 (32-bit; booted
#                              by qemu-system-x86_64 like the others, an x86-64 CPU runs it)
#   --initramfs PATH           image to boot; default: build one (build/images/) with the
#                              --module/--prog/--file options below
#   --module PATH.ko           (default image only) our module, for --driver ours
#   --prog PATH / --file SRC=/DEST  (default image only) extra programs / files
#   --snd builtin-wav FILE     QEMU's own virtio-sound-pci writing FILE (-audiodev wav)
#   --snd vhost-user SOCKET    vhost-user-snd-pci connected to a backend listening on SOCKET
#   --snd none                 no sound device (default)
#   --snd CARD AUDIODEV        one of QEMU's own emulated cards (what Windows guests drive):
#                              CARD intel-hda (+ hda-duplex), ich9-intel-hda (+ hda-duplex),
#                              ac97, virtio-sound (virtio-sound-pci); AUDIODEV wav:FILE
#                              (QEMU's wav backend writes FILE) or dbus:QMP_SOCKET (QEMU's
#                              D-Bus audio, for dsproxy-host-reader --qmp QMP_SOCKET);
#                              builtin-wav FILE is virtio-sound wav:FILE
#   --wav-params RATE:CH:FMT   wav output format (default 48000:2:s16; QEMU resamples when it
#                              differs from the guest's stream)
#   --audiodev-opts OPTS       more -audiodev options (e.g. out.mixing-engine=off)
#   --hda-codec duplex|output|micro  the codec on intel-hda/ich9-intel-hda (default duplex)
#   --hda-mixer on|off         the codec's emulated amplifiers (default off: QEMU then applies no
#                              volume, so what the guest plays reaches the audiodev unscaled)
#   --hda-timer on|off         the codec's use-timer (default off; QEMU's default on moves the
#                              audio through an 8 KiB buffer on a timer, and drops a whole
#                              buffer when the host falls behind, and its tail at stream stop)
#   --controls on|off          vhost-user-snd-pci controls= (default on)
#   --driver stock|ours|ac97|hda|none  dsproxy.driver= (default: the card's: stock for the
#                              virtio ones, ac97, hda; none without a sound device)
#   --run "CMD ARGS"           dsproxy.run= (the program to run; required unless --interactive)
#   --append "K=V ..."         extra kernel command line (e.g. dsproxy_oss.debug=1)
#   --timeout SEC              kill the guest after SEC seconds (default 120) -> exit 124
#   --log FILE                 also write the serial console to FILE
#   --quiet                    do not copy the console to stdout (the log still gets it)
#   --verbose                  kernel messages on the console (no quiet/loglevel)
#   --accel auto|tcg|kvm       default auto: KVM only if a cached probe boot succeeded
#   --smp N                    guest CPUs (default 1)
#   --machine q35|pc           QEMU machine (default q35; pc is the i440FX of XP/7-era guests)
#   --interactive              console on this terminal, no timeout (shell if no --run)
# Exit status: the guest program's status; 124 timeout; 125 guest setup failed (module load,
# missing module set); 126 QEMU failed, was killed, or the guest died without an exit marker;
# 2 bad usage.
# On exit it prints "guest-run: exit=N boot_ms=… ready_ms=… total_ms=…" on stderr:
# boot_ms = guest uptime when /init started, ready_ms = uptime when the program was started.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${DSPROXY_BUILD_DIR:-$repo_root/build}"

EXIT_TIMEOUT=124
EXIT_SETUP=125
EXIT_QEMU=126

log() { echo "guest-run: $*" >&2; }
die() { echo "guest-run: error: $*" >&2; exit 2; }
usage() { sed -n '2,48p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
# shellcheck source=scripts/flavors.sh
. "$repo_root/scripts/flavors.sh"

flavor=6.12
initramfs=""
image_args=()
snd=none
snd_target=""
wav_params="48000:2:s16"
audiodev=""
audiodev_opts=""
hda_codec=duplex
hda_mixer=off
hda_timer=off
controls=on
driver=""
run=""
append=""
timeout_s=120
log_file=""
quiet=0
verbose=0
accel="${DSPROXY_ACCEL:-auto}"
smp=1
machine=q35
interactive=0
extra_qemu=()

while [ $# -gt 0 ]; do
  case "$1" in
    --flavor) flavor="${2:?}"; shift 2 ;;
    --initramfs) initramfs="${2:?}"; shift 2 ;;
    --module|--prog|--file) [ $# -ge 2 ] || usage; image_args+=("$1" "$2"); shift 2 ;;
    --snd)
      [ $# -ge 2 ] || usage
      snd="$2"
      case "$snd" in
        builtin-wav) [ $# -ge 3 ] || usage; snd=virtio-sound; audiodev="wav:$3"; shift 3 ;;
        vhost-user) [ $# -ge 3 ] || usage; snd_target="$3"; shift 3 ;;
        intel-hda|ich9-intel-hda|ac97|virtio-sound) [ $# -ge 3 ] || usage; audiodev="$3"; shift 3 ;;
        none) shift 2 ;;
        *) die "--snd: unknown kind '$snd' (intel-hda, ich9-intel-hda, ac97, virtio-sound AUDIODEV; builtin-wav FILE; vhost-user SOCKET; none)" ;;
      esac ;;
    --wav-params) wav_params="${2:?}"; shift 2 ;;
    --audiodev-opts) audiodev_opts="${2?}"; shift 2 ;;
    --hda-codec) hda_codec="${2:?}"; shift 2 ;;
    --hda-mixer) hda_mixer="${2:?}"; shift 2 ;;
    --hda-timer) hda_timer="${2:?}"; shift 2 ;;
    --controls) controls="${2:?}"; shift 2 ;;
    --driver) driver="${2:?}"; shift 2 ;;
    --run) run="${2?}"; shift 2 ;;
    --append) append="${2?}"; shift 2 ;;
    --timeout) timeout_s="${2:?}"; shift 2 ;;
    --log) log_file="${2:?}"; shift 2 ;;
    --quiet) quiet=1; shift ;;
    --verbose) verbose=1; shift ;;
    --accel) accel="${2:?}"; shift 2 ;;
    --smp) smp="${2:?}"; shift 2 ;;
    --machine) machine="${2:?}"; shift 2 ;;
    --interactive) interactive=1; shift ;;
    -h|--help) usage ;;
    --) shift; extra_qemu=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

flavor_known "$flavor" || die "--flavor: '$flavor' ($DSPROXY_FLAVORS_TEXT)"
case "$controls" in on|off) ;; *) die "--controls: on or off" ;; esac
case "$accel" in auto|tcg|kvm) ;; *) die "--accel: auto, tcg or kvm" ;; esac
case "$machine" in q35|pc) ;; *) die "--machine: q35 or pc" ;; esac
[[ "$timeout_s" =~ ^[0-9]+$ ]] && [ "$timeout_s" -gt 0 ] || die "--timeout: a positive number of seconds"
[[ "$smp" =~ ^[0-9]+$ ]] && [ "$smp" -gt 0 ] || die "--smp: a positive number"
case "$hda_codec" in duplex|output|micro) ;; *) die "--hda-codec: duplex, output or micro" ;; esac
case "$hda_mixer" in on|off) ;; *) die "--hda-mixer: on or off" ;; esac
case "$hda_timer" in on|off) ;; *) die "--hda-timer: on or off" ;; esac
if [ -z "$driver" ]; then
  case "$snd" in
    none) driver=none ;;
    intel-hda|ich9-intel-hda) driver=hda ;;
    ac97) driver=ac97 ;;
    *) driver=stock ;;
  esac
fi
case "$driver" in stock|ours|ac97|hda|none) ;; *) die "--driver: stock, ours, ac97, hda or none" ;; esac
[ -n "$run" ] || [ "$interactive" -eq 1 ] || die "--run is required (or --interactive)"
case "$run" in *'"'*) die "--run must not contain double quotes (the kernel command line cannot carry them); use single quotes" ;; esac
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (run scripts/setup-host.sh)"

kdir="$build_dir/kernels/$flavor"
if [ ! -f "$kdir/.done" ]; then
  "$repo_root/scripts/fetch-kernels.sh" "$flavor" >&2
fi
kver="$(cat "$kdir/KVER")"
kernel="$kdir/root/boot/vmlinuz-$kver"
[ -f "$kernel" ] || die "$kernel missing (re-run scripts/fetch-kernels.sh)"
# The uncompressed ELF (PVH entry) boots faster under TCG: no in-guest decompression.
if [ -f "$kdir/vmlinux" ]; then kernel="$kdir/vmlinux"; fi

if [ -z "$initramfs" ]; then
  mkdir -p "$build_dir/images"
  initramfs="$build_dir/images/last-$flavor-$$.cpio.gz"
  "$repo_root/images/build-initramfs.sh" "$flavor" "$initramfs" "${image_args[@]}" >/dev/null
  cleanup_initramfs="$initramfs"
else
  [ ${#image_args[@]} -eq 0 ] || die "--module/--prog/--file only apply without --initramfs"
  [ -f "$initramfs" ] || die "--initramfs $initramfs: no such file"
  cleanup_initramfs=""
fi

mem=256M
qemu_args=(
  -m "$mem" -smp "$smp"
  # vhost-user backends map guest memory: it must be a shareable memfd.
  -object "memory-backend-memfd,id=mem,size=$mem,share=on" -machine "$machine,memory-backend=mem"
  -nodefaults -no-user-config -display none -monitor none -no-reboot
  -kernel "$kernel" -initrd "$initramfs"
)

# ---- QEMU's own cards: the -audiodev (id snd0) the card plays into --------------------------
# AUDIODEV is KIND:ARGS; each kind adds its -audiodev (and whatever else it needs) here.
audiodev_args() {
  local spec="$1" opts=""
  [ -z "$audiodev_opts" ] || opts=",$audiodev_opts"
  case "$spec" in
    wav:?*)
      local path="${spec#wav:}" wav_rate wav_ch wav_fmt
      IFS=: read -r wav_rate wav_ch wav_fmt <<<"$wav_params"
      [[ "$wav_rate" =~ ^[0-9]+$ && "$wav_ch" =~ ^[0-9]+$ && -n "$wav_fmt" ]] ||
        die "--wav-params: RATE:CHANNELS:FORMAT, e.g. 48000:2:s16"
      case "$path" in *,*) die "wav:$path: the path must not contain a comma (QEMU's option syntax)" ;; esac
      mkdir -p "$(dirname "$path")"
      qemu_args+=(-audiodev "wav,id=snd0,path=$path,out.frequency=$wav_rate,out.channels=$wav_ch,out.format=$wav_fmt$opts")
      ;;
    dbus:?*)
      # QEMU's D-Bus audio: a listener (dsproxy-host-reader --qmp PATH) attaches through QMP.
      local qmp="${spec#dbus:}"
      case "$qmp" in *,*) die "dbus:$qmp: the path must not contain a comma (QEMU's option syntax)" ;; esac
      qemu_args+=(-audiodev "dbus,id=snd0$opts" -display "dbus,p2p=yes,gl=off,audiodev=snd0"
                  -qmp "unix:$qmp,server=on,wait=off")
      ;;
    *) die "audiodev '$spec': expected wav:FILE or dbus:QMP_SOCKET" ;;
  esac
}

case "$snd" in
  intel-hda|ich9-intel-hda)
    audiodev_args "$audiodev"
    qemu_args+=(-device "$snd,id=hda0" -device "hda-$hda_codec,bus=hda0.0,audiodev=snd0,mixer=$hda_mixer,use-timer=$hda_timer") ;;
  ac97)
    audiodev_args "$audiodev"
    qemu_args+=(-device AC97,audiodev=snd0) ;;
  virtio-sound)
    audiodev_args "$audiodev"
    qemu_args+=(-device virtio-sound-pci,audiodev=snd0) ;;
  vhost-user)
    [ -S "$snd_target" ] || die "--snd vhost-user $snd_target: no listening socket there (start dsproxy-device first)"
    qemu_args+=(
      -chardev "socket,id=snd,path=$snd_target"
      -device "vhost-user-snd-pci,chardev=snd,controls=$controls"
    ) ;;
esac

# console=ttyS0: the serial port is the only console; panic=-1 turns a guest panic into a
# reboot, which -no-reboot turns into a QEMU exit (no hang until the timeout).
cmdline="console=ttyS0 panic=-1 dsproxy.driver=$driver"
# Without a sound device there is no /dev/dsp to wait for.
if [ "$snd" = none ]; then cmdline="$cmdline dsproxy.wait_ms=0"; fi
if [ "$verbose" -eq 0 ]; then cmdline="quiet loglevel=3 $cmdline"; fi
[ -z "$run" ] || cmdline="$cmdline dsproxy.run=\"$run\""
[ -z "$append" ] || cmdline="$cmdline $append"
qemu_args+=(-append "$cmdline")

# ---- accelerator: KVM only if a probe boot of this kernel succeeded on this host ----------
kvm_probe() {
  local cache="$build_dir/kvm-probe" key result
  key="$(uname -r)|$(qemu-system-x86_64 --version | head -1)|$kver"
  if [ -f "$cache" ] && [ "$(sed -n 1p "$cache")" = "$key" ]; then
    sed -n 2p "$cache"; return
  fi
  result=fails
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    local probe_img="$build_dir/images/kvm-probe.cpio.gz"
    "$repo_root/images/build-initramfs.sh" "$flavor" "$probe_img" >/dev/null 2>&1 || true
    if timeout -k 2 20 qemu-system-x86_64 -accel kvm -cpu host -m 256M -nodefaults -no-user-config \
        -display none -monitor none -no-reboot -serial stdio -kernel "$kernel" -initrd "$probe_img" \
        -append 'console=ttyS0 quiet loglevel=3 panic=-1 dsproxy.run="true"' </dev/null 2>/dev/null |
        tr -d '\r' | grep -q 'DSPROXY-GUEST: exit=0'; then
      result=works
    fi
  fi
  mkdir -p "$build_dir"
  printf '%s\n%s\n' "$key" "$result" >"$cache"
  echo "$result"
}
case "$accel" in
  auto) if [ "$(kvm_probe)" = works ]; then accel=kvm; else accel=tcg; fi ;;
esac
if [ "$accel" = kvm ]; then
  qemu_args+=(-accel kvm -cpu host)
else
  qemu_args+=(-accel tcg -cpu max)
fi
qemu_args+=("${extra_qemu[@]}")

cleanup() { [ -z "$cleanup_initramfs" ] || rm -f "$cleanup_initramfs"; [ -z "${tmp_log:-}" ] || rm -f "$tmp_log"; }
trap cleanup EXIT

if [ "$interactive" -eq 1 ]; then
  log "interactive: Ctrl-A x quits QEMU"
  qemu-system-x86_64 "${qemu_args[@]}" -serial mon:stdio
  exit $?
fi

if [ -n "$log_file" ]; then
  mkdir -p "$(dirname "$log_file")"
  console="$log_file"
else
  tmp_log="$(mktemp "${TMPDIR:-/tmp}/guest-run.XXXXXX")"
  console="$tmp_log"
fi

start_ns=$(date +%s%N)
set +e
if [ "$quiet" -eq 1 ]; then
  timeout -k 5 "$timeout_s" qemu-system-x86_64 "${qemu_args[@]}" -serial stdio </dev/null | tr -d '\r' >"$console"
else
  timeout -k 5 "$timeout_s" qemu-system-x86_64 "${qemu_args[@]}" -serial stdio </dev/null | tr -d '\r' | tee "$console"
fi
qemu_rc=${PIPESTATUS[0]}
set -e
total_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))

# Markers may be glued to other output (firmware escapes), so match anywhere in a line.
exit_marker="$(grep -oE 'DSPROXY-GUEST: exit=[0-9]+' "$console" | tail -1 || true)"
boot_s="$(grep -oE 'DSPROXY-GUEST: boot .*uptime=[0-9.]+' "$console" | head -1 | sed 's/.*uptime=//' || true)"
ready_s="$(grep -oE 'DSPROXY-GUEST: ready uptime=[0-9.]+' "$console" | head -1 | sed 's/.*uptime=//' || true)"
to_ms() { [ -n "$1" ] && awk -v s="$1" 'BEGIN { printf "%d", s * 1000 }' || echo "?"; }

if [ -n "$exit_marker" ]; then
  status="${exit_marker##*=}"
elif [ "$qemu_rc" -eq 124 ] || { [ "$qemu_rc" -eq 137 ] && [ "$total_ms" -ge $((timeout_s * 1000)) ]; }; then
  # 124: timeout sent SIGTERM; 137 after the timeout: its -k SIGKILL.
  log "timeout: no exit marker after ${timeout_s}s"
  status=$EXIT_TIMEOUT
elif [ "$qemu_rc" -gt 128 ]; then
  # Killed from outside (the end-to-end tests SIGKILL QEMU on purpose), not a timeout.
  log "QEMU was killed by signal $((qemu_rc - 128)) before the guest finished"
  status=$EXIT_QEMU
else
  log "QEMU exited with status $qemu_rc and no exit marker (guest crashed or QEMU failed)"
  status=$EXIT_QEMU
fi
if [ "$status" -eq "$EXIT_SETUP" ]; then
  log "guest setup failed: $(grep -oE 'DSPROXY-GUEST: error: .*' "$console" | head -1)"
fi
log "exit=$status accel=$accel flavor=$flavor boot_ms=$(to_ms "$boot_s") ready_ms=$(to_ms "$ready_s") total_ms=$total_ms"
exit "$status"

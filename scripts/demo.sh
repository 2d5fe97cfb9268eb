#!/usr/bin/env bash
# dsproxy's demo — the README's main command. On a fresh Debian bookworm machine it installs
# what is missing, builds everything, boots a minimal Linux guest under QEMU with dsproxy's
# virtual sound card, plays a short tune through /dev/dsp inside it, and leaves what the guest
# played in ./out.wav and a picture of it in ./out.png. It ends with the reader's verdict: the
# capture compared with the tune, sample for sample.
#
# Usage: scripts/demo.sh [--kernel 6.1|6.12] [--driver ours|stock] [--out FILE] [--listen]
#   --kernel 6.12   the guest kernel (default 6.12; 6.1 has no virtio_snd, so only --driver ours)
#   --driver ours   the guest's sound driver: ours = dsproxy_oss.ko (default), stock = the
#                   kernel's virtio_snd + snd-pcm-oss (6.12 only)
#   --out FILE      where to leave the capture (default ./out.wav; the picture goes beside it)
#   --listen        also play the tune on this machine's sound card (default: record only)
#   --keep-logs     keep the device/reader/guest logs (printed path) even on success
# Steps: scripts/setup-host.sh, cargo build, scripts/fetch-kernels.sh, the guest module and
# image, dsproxy-device + dsproxy-host-reader -e --once -f out.wav --expect TUNE --plot out.png,
# scripts/guest-run.sh with `dsp-play --tune`, then a clean shutdown. The reader ends by itself
# a second after the guest closes /dev/dsp and says whether out.wav holds exactly the tune
# (the same program, run on the host, wrote TUNE).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${DSPROXY_BUILD_DIR:-$repo_root/build}"
orig_pwd="$PWD"

kernel=6.12
driver=ours
out="out.wav"
listen=0
keep_logs=0
RATE=48000 CHANNELS=2 FORMAT=s16

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
say() { printf '%sdemo:%s %s\n' "$bold" "$plain" "$*"; }
die() { echo "demo: error: $*" >&2; exit 1; }
usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel="${2:?--kernel needs 6.1 or 6.12}"; shift 2 ;;
    --driver) driver="${2:?--driver needs ours or stock}"; shift 2 ;;
    --out) out="${2:?--out needs a file name}"; shift 2 ;;
    --listen) listen=1; shift ;;
    --keep-logs) keep_logs=1; shift ;;
    -h|--help) usage ;;
    *) echo "demo: unknown argument '$1'" >&2; usage ;;
  esac
done
case "$kernel" in 6.1|6.12) ;; *) die "--kernel: 6.1 or 6.12, not '$kernel'" ;; esac
case "$driver" in ours|stock) ;; *) die "--driver: ours or stock, not '$driver'" ;; esac
[ "$kernel/$driver" != 6.1/stock ] ||
  die "Debian's 6.1 kernel has no virtio_snd driver: use --driver ours with --kernel 6.1"
case "$out" in *.wav) ;; *) die "--out must name a .wav file" ;; esac
case "$out" in /*) ;; *) out="$orig_pwd/$out" ;; esac
png="${out%.wav}.png"

cd "$repo_root"
t_start=$(date +%s)

say "1/5 host set-up (apt-get, rustup if missing)"
bash scripts/setup-host.sh
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

say "2/5 building dsproxy-device, dsproxy-host-reader and the guest test programs"
cargo build --release --locked -q -p dsproxy-device -p dsproxy-host-reader
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo_root/$target_dir" ;; esac
device_bin="$target_dir/release/dsproxy-device"
reader_bin="$target_dir/release/dsproxy-host-reader"
make -s -C images/progs OUT="$build_dir/progs"

say "3/5 guest: Debian $kernel kernel, $([ "$driver" = ours ] && echo "dsproxy_oss.ko" || echo "virtio_snd + snd-pcm-oss"), busybox initramfs"
scripts/fetch-kernels.sh "$kernel"
image_args=()
if [ "$driver" = ours ]; then
  scripts/build-guest-driver.sh "$kernel"
  image_args=(--module "$build_dir/guest-driver/$kernel/dsproxy_oss.ko")
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/dsproxy-demo.XXXXXX")"
image="$work/initramfs.cpio.gz"
images/build-initramfs.sh "$kernel" "$image" "${image_args[@]}" >/dev/null

# ---- the card and the reader ----------------------------------------------------------------
device_pid="" reader_pid="" ok=0
cleanup() {
  local rc=$?
  # Only the processes this script started, by pid.
  [ -z "$reader_pid" ] || kill -INT "$reader_pid" 2>/dev/null || true
  [ -z "$device_pid" ] || kill -INT "$device_pid" 2>/dev/null || true
  sleep 0.2
  [ -z "$reader_pid" ] || kill -KILL "$reader_pid" 2>/dev/null || true
  [ -z "$device_pid" ] || kill -KILL "$device_pid" 2>/dev/null || true
  if [ "$ok" -eq 1 ] && [ "$keep_logs" -eq 0 ]; then
    rm -rf "$work"
  else
    echo "demo: logs kept in $work (device.log, reader.log, console.log)" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "4/5 starting dsproxy-device and dsproxy-host-reader -e --once -f $(basename "$out") --expect the tune --plot $(basename "$png")"
rm -f "$out" "$png"
# What the guest must play: the same program writes the tune's bytes on the host.
tune="$work/tune.pcm"
"$build_dir/progs/host/dsp-play" --tune --stdout -r "$RATE" -f "$FORMAT" -c "$CHANNELS" >"$tune"
out_dir="$(dirname "$out")"
mkdir -p "$out_dir"
# A previous run's later segments would be confusing next to the new out.wav.
rm -f "${out%.wav}".seg[0-9]*.wav
"$device_bin" --socket "$work/vhost.sock" --tap "$work/tap.sock" --wait-for-reader \
  >"$work/device.log" 2>&1 &
device_pid=$!
for _ in $(seq 100); do [ -S "$work/tap.sock" ] && break; sleep 0.1; done
[ -S "$work/tap.sock" ] || { tail -n 20 "$work/device.log" >&2; die "dsproxy-device did not start"; }

reader_args=(-u "$work/tap.sock" -e --once -f "$out" --plot "$png"
  --expect "$tune" --raw-format "S16_LE:$RATE:$CHANNELS")
[ "$listen" -eq 1 ] || reader_args+=(-x)
"$reader_bin" "${reader_args[@]}" 2> >(tee "$work/reader.log" | sed 's/^/  reader: /' >&2) &
reader_pid=$!
for _ in $(seq 100); do [ -S "$work/vhost.sock" ] && break; sleep 0.1; done
[ -S "$work/vhost.sock" ] || { tail -n 20 "$work/device.log" >&2; die "dsproxy-device did not open its vhost-user socket"; }

say "5/5 booting the guest and playing the tune through /dev/dsp (dsp-play --tune)"
set +e
scripts/guest-run.sh --flavor "$kernel" --initramfs "$image" --snd vhost-user "$work/vhost.sock" \
  --driver "$driver" --quiet --log "$work/console.log" --timeout 180 \
  --run "dsp-play --tune -r $RATE -f $FORMAT -c $CHANNELS --strict"
guest_rc=$?
set -e
grep -E 'DSP-PLAY: (SPEED|SETFMT|CHANNELS|playing|elapsed)' "$work/console.log" | sed 's/^/  guest: /' || true
if [ "$guest_rc" -ne 0 ]; then
  tail -n 30 "$work/console.log" >&2
  die "the guest's dsp-play failed (exit $guest_rc); console: $work/console.log"
fi

# The reader exits by itself (--once) a second after the guest closes /dev/dsp; give it a
# moment.
for _ in $(seq 100); do kill -0 "$reader_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$reader_pid" 2>/dev/null; then kill -INT "$reader_pid"; fi
reader_rc=0
wait "$reader_pid" || reader_rc=$?
reader_pid=""
kill -INT "$device_pid" 2>/dev/null || true
wait "$device_pid" 2>/dev/null || true
device_pid=""
verdict="$(sed -n 's/^dsproxy-host-reader: \(MATCH: .*\|MISMATCH: .*\)$/\1/p' "$work/reader.log" | tail -n 1)"
case "$reader_rc" in
  0|3) ;;
  *) die "dsproxy-host-reader exited with status $reader_rc ($work/reader.log)" ;;
esac
[ -f "$out" ] || die "no $out was written ($work/reader.log)"

# ---- what is in out.wav ---------------------------------------------------------------------
le32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
le16() { od -An -tu2 -j "$2" -N2 "$1" | tr -d ' '; }
# Walk the chunks to "fmt " and "data" (the reader may write more than the canonical 44 bytes).
pos=12 size=$(stat -c %s "$out") data_len="" w_ch="" w_rate="" w_bits=""
while [ $((pos + 8)) -le "$size" ]; do
  id="$(dd if="$out" bs=1 skip="$pos" count=4 2>/dev/null)"
  len="$(le32 "$out" $((pos + 4)))"
  case "$id" in
    "fmt ") w_ch="$(le16 "$out" $((pos + 10)))"; w_rate="$(le32 "$out" $((pos + 12)))"; w_bits="$(le16 "$out" $((pos + 22)))" ;;
    data) data_len="$len"; break ;;
  esac
  pos=$((pos + 8 + len + (len & 1)))
done
[ -n "$data_len" ] && [ -n "$w_rate" ] || die "$out is not a WAV file the demo understands"
ms=$((data_len * 1000 / (w_rate * w_ch * w_bits / 8)))
[ "$reader_rc" -eq 0 ] && ok=1
echo
say "done in $(( $(date +%s) - t_start )) s"
say "$out: $w_rate Hz, $w_bits-bit, $w_ch channel(s), $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s, $data_len bytes of audio"
[ ! -f "$png" ] || say "$png: its waveform and spectrogram"
[ "$ok" -eq 1 ] && say "play it with: aplay $out   (or any audio player)"
say "verdict: ${verdict:-none (see $work/reader.log)}"
[ "$ok" -eq 1 ] || exit 1

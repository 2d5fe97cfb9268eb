#!/usr/bin/env bash
# Smoke test of the guest tooling, without dsproxy's own device:
#   1. 6.12 guest, stock virtio_snd + snd-pcm-oss, QEMU's built-in virtio-sound-pci writing a WAV:
#      dsp-play 48000 Hz s16 stereo for 1 s; the WAV's data must start with exactly the bytes
#      `dsp-play --stdout` generates on the host, followed only by silence.
#   2. 6.1 guest (no virtio_snd): boots and runs a program; the in-guest signal hash must equal
#      the host's.
# Prints boot timings. Exit 0 if both pass.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${DSPROXY_BUILD_DIR:-$repo_root/build}"
out="$build_dir/smoke"
mkdir -p "$out"
fail() { echo "guest-smoke: FAIL: $*" >&2; exit 1; }

make -s -C "$repo_root/images/progs" OUT="$build_dir/progs"
host_play="$build_dir/progs/host/dsp-play"
host_record="$build_dir/progs/host/dsp-record"

# ---- 1: 6.12 + builtin wav ----------------------------------------------------------------
rm -f "$out/612.wav"
"$repo_root/scripts/guest-run.sh" --flavor 6.12 --snd builtin-wav "$out/612.wav" \
  --wav-params 48000:2:s16 --timeout 120 --quiet --log "$out/612.log" \
  --run "dsp-play --rate 48000 --format s16 --channels 2 --ms 1000 --strict" ||
  fail "6.12 guest run failed (exit $?); see $out/612.log"
"$host_play" --stdout --rate 48000 --format s16 --channels 2 --ms 1000 >"$out/612.expected"
expected_len=$(stat -c %s "$out/612.expected")
[ "$(head -c 4 "$out/612.wav")" = RIFF ] || fail "$out/612.wav is not a RIFF file"
# QEMU's wav backend writes the canonical 44-byte header: "data" at offset 36.
[ "$(tail -c +37 "$out/612.wav" | head -c 4)" = data ] || fail "$out/612.wav: no data chunk at 36"
data_len=$(( $(stat -c %s "$out/612.wav") - 44 ))
[ "$data_len" -ge "$expected_len" ] || fail "WAV holds $data_len bytes, the guest played $expected_len"
cmp -s --ignore-initial=44:0 --bytes="$expected_len" "$out/612.wav" "$out/612.expected" ||
  fail "WAV data differs from the signal the guest played"
trailing_nonzero=$(tail -c +$((45 + expected_len)) "$out/612.wav" | tr -d '\0' | wc -c)
[ "$trailing_nonzero" -eq 0 ] || fail "$trailing_nonzero non-zero bytes after the played signal"
guest_hash=$(grep -oE 'DSP-PLAY: playing bytes=[0-9]+ audio_ms=[0-9.]+ fnv1a64=[0-9a-f]+' "$out/612.log" | sed 's/.*fnv1a64=//')
host_hash=$("$host_record" --stdin <"$out/612.expected" | sed -nE 's/.*fnv1a64=([0-9a-f]+).*/\1/p')
[ -n "$guest_hash" ] && [ "$guest_hash" = "$host_hash" ] || fail "signal hash guest=$guest_hash host=$host_hash"
echo "guest-smoke: 6.12 ok: WAV data = the $expected_len signal bytes + $((data_len - expected_len)) bytes of silence (fnv1a64 $host_hash)"
grep -E 'elapsed_ms' "$out/612.log" | sed 's/^/guest-smoke:   /'

# ---- 2: 6.1 boots and runs a program -------------------------------------------------------
"$repo_root/scripts/guest-run.sh" --flavor 6.1 --timeout 120 --quiet --log "$out/61.log" \
  --run "uname -r; dsp-play --stdout --ms 100 | dsp-record --stdin" ||
  fail "6.1 guest run failed (exit $?); see $out/61.log"
want=$("$host_play" --stdout --ms 100 | "$host_record" --stdin | sed -nE 's/.*(bytes=[0-9]+ fnv1a64=[0-9a-f]+).*/\1/p')
grep -q "DSP-RECORD: $want" "$out/61.log" || fail "6.1 guest computed a different signal (want $want)"
grep -q "$(cat "$build_dir/kernels/6.1/KVER")" "$out/61.log" || fail "6.1 guest did not report its kernel"
echo "guest-smoke: 6.1 ok: booted $(cat "$build_dir/kernels/6.1/KVER"), same signal ($want)"

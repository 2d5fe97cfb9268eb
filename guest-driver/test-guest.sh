#!/usr/bin/env bash
# End-to-end tests of dsproxy_oss.ko in real guests (6.1 and 6.12) against QEMU's built-in
# virtio-sound-pci (no control elements):
#   api    guest-driver/tests/oss-api-test -i: the OSS API (params, nonblocking I/O, poll,
#          GETOSPACE/GETODELAY/GETOPTR, SYNC, POST, SETTRIGGER, RESET, partial frames, capture,
#          duplex, software mixer) against -audiodev none (paced output and silent input)
#   wav-*  dsp-play through -audiodev wav: the WAV's data must be exactly the bytes the guest
#          wrote (cut to whole frames), with nothing after them
# and, when a dsproxy-device binary is available (DSPROXY_DEVICE_BIN, or dsproxy-device in
# $CARGO_TARGET_DIR or target/, release or debug), against dsproxy's own vhost-user device with
# control elements:
#   vhost-api  oss-api-test -i again (now the mixer runs on the device's control elements)
#
# Usage: guest-driver/test-guest.sh [FLAVOR...]        (default: 6.1 6.12; also 5.10, 6.1-686)
# Exit 0 if every test passed. Logs: build/guest-driver/test/.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${DSPROXY_BUILD_DIR:-$repo_root/build}"
out="$build_dir/guest-driver/test"
mkdir -p "$out"
flavors=("$@")
[ ${#flavors[@]} -gt 0 ] || flavors=(6.1 6.12)

failed=0
pass() { echo "test-guest: PASS $*"; }
fail() { echo "test-guest: FAIL $*"; failed=1; }

"$repo_root/scripts/build-guest-driver.sh" "${flavors[@]}"
make -s -C "$repo_root/images/progs" OUT="$build_dir/progs"
# shellcheck source=scripts/flavors.sh
. "$repo_root/scripts/flavors.sh"
# the in-guest API test, x86-64 and i386 (the 32-bit guest runs only the latter; the name in
# the guest is oss-api-test either way)
api_dir="$build_dir/guest-driver/progs"
mkdir -p "$api_dir/amd64" "$api_dir/i386"
gcc -O2 -Wall -Wextra -Werror -static -s -o "$api_dir/amd64/oss-api-test" "$repo_root/guest-driver/tests/oss-api-test.c"
gcc -m32 -O2 -Wall -Wextra -Werror -static -s -o "$api_dir/i386/oss-api-test" "$repo_root/guest-driver/tests/oss-api-test.c"
api_test_for() { echo "$api_dir/$(flavor_arch "$1")/oss-api-test"; }

run_guest() { # FLAVOR NAME [guest-run args...]
  local flavor="$1" name="$2"
  shift 2
  # (images/build-initramfs.sh adds the virtio PCI transport where it is a module: 6.1)
  "$repo_root/scripts/guest-run.sh" --flavor "$flavor" --driver ours \
    --module "$build_dir/guest-driver/$flavor/dsproxy_oss.ko" \
    --timeout 180 --quiet --log "$out/$flavor-$name.log" "$@" >"$out/$flavor-$name.stderr" 2>&1
}

# WAV data must equal EXPECTED (the host's copy of the signal), followed by nothing but zeros.
check_wav() { # WAV EXPECTED -> prints a reason on failure
  local wav="$1" exp="$2" elen dlen tn
  [ "$(head -c 4 "$wav" 2>/dev/null)" = RIFF ] || { echo "not a RIFF file"; return 1; }
  elen=$(stat -c %s "$exp")
  dlen=$(( $(stat -c %s "$wav") - 44 ))
  [ "$dlen" -ge "$elen" ] || { echo "WAV holds $dlen bytes, the guest wrote $elen"; return 1; }
  cmp -s --ignore-initial=44:0 --bytes="$elen" "$wav" "$exp" ||
    { echo "WAV data differs from what the guest wrote"; return 1; }
  tn=$(tail -c +$((45 + elen)) "$wav" | tr -d '\0' | wc -c)
  [ "$tn" -eq 0 ] || { echo "$tn non-zero bytes after the signal"; return 1; }
  echo "$elen bytes exact, $((dlen - elen)) bytes of silence after"
}

wav_test() { # FLAVOR NAME WAVPARAMS DSP-PLAY-ARGS...
  local flavor="$1" name="$2" wp="$3"
  shift 3
  local wav="$out/$flavor-$name.wav" exp="$out/$flavor-$name.expected" why
  rm -f "$wav"
  if ! run_guest "$flavor" "$name" --snd builtin-wav "$wav" --wav-params "$wp" \
      --append "dsproxy_oss.stop_delay_ms=100" --run "dsp-play --strict $*"; then
    fail "$flavor $name: guest exit $(tail -1 "$out/$flavor-$name.stderr")"
    return
  fi
  # the host's copy of the signal, cut to whole frames (the driver never sends a partial one)
  "$build_dir/progs/host/dsp-play" --stdout "$@" >"$exp.full"
  local frame=$(( $(sed -nE 's/.*-c ([0-9]+).*/\1/p' <<<"$*") * 2 ))
  head -c $(( $(stat -c %s "$exp.full") / frame * frame )) "$exp.full" >"$exp"
  if why="$(check_wav "$wav" "$exp")"; then
    pass "$flavor $name: $why"
  else
    fail "$flavor $name: $why"
  fi
}

device_bin="${DSPROXY_DEVICE_BIN:-}"
if [ -z "$device_bin" ]; then
  for d in "${CARGO_TARGET_DIR:-$repo_root/target}"/{release,debug}; do
    if [ -x "$d/dsproxy-device" ]; then device_bin="$d/dsproxy-device"; break; fi
  done
fi
[ -n "$device_bin" ] || echo "test-guest: no dsproxy-device binary; skipping the vhost-user tests"

vhost_api_test() { # FLAVOR
  local flavor="$1" dir="$out/$1-vhost" dev rc=0
  rm -rf "$dir"
  mkdir -p "$dir"
  "$device_bin" --socket "$dir/vhost.sock" --tap "$dir/tap.sock" >"$dir/device.log" 2>&1 &
  dev=$!
  for _ in $(seq 50); do [ -S "$dir/vhost.sock" ] && break; sleep 0.1; done
  run_guest "$flavor" vhost-api --snd vhost-user "$dir/vhost.sock" --controls on \
    --prog "$(api_test_for "$flavor")" --append "dsproxy.dmesg=1" --run "oss-api-test -i" || rc=$?
  kill -INT "$dev" 2>/dev/null || true
  wait "$dev" 2>/dev/null || true
  if [ "$rc" -eq 0 ] && grep -q "mixer: .* control elements" "$out/$flavor-vhost-api.log"; then
    pass "$flavor vhost-api: $(grep -ac 'OSS-API: ok' "$out/$flavor-vhost-api.log") checks, hardware mixer"
  else
    fail "$flavor vhost-api: exit $rc; $(grep -a 'OSS-API: FAIL' "$out/$flavor-vhost-api.log" | tr '\n' ' ')"
  fi
}

for flavor in "${flavors[@]}"; do
  if run_guest "$flavor" api --snd none --prog "$(api_test_for "$flavor")" --append "dsproxy.wait_ms=5000" \
      --run "oss-api-test -i" -- -audiodev none,id=n0 -device virtio-sound-pci,audiodev=n0; then
    pass "$flavor api: $(grep -ac 'OSS-API: ok' "$out/$flavor-api.log") checks"
  else
    fail "$flavor api: $(grep -a 'OSS-API: FAIL' "$out/$flavor-api.log" | tr '\n' ' ')"
  fi
  wav_test "$flavor" wav-1s 48000:2:s16 -r 48000 -f s16 -c 2 --ms 1000
  wav_test "$flavor" wav-odd 44100:2:s16 -r 44100 -f s16 -c 2 --bytes 100001 --write-size 777 \
    --frag 0x0008000a --sync
  # (stereo: QEMU's mixer doubles mono samples on the way to a mono WAV)
  wav_test "$flavor" wav-nonblock 22050:2:s16 -r 22050 -f s16 -c 2 --ms 500 --nonblock
  [ -z "$device_bin" ] || vhost_api_test "$flavor"
done

[ "$failed" -eq 0 ] && echo "test-guest: all passed" || echo "test-guest: some tests failed (logs: $out)"
exit "$failed"

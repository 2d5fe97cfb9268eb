#!/usr/bin/env python3
"""dsproxy's end-to-end suite: real Linux guests under QEMU play and record through /dev/dsp,
and the files dsproxy-host-reader writes on the host are checked byte for byte.

Run it through tests/e2e/run.sh (the last step of scripts/test.sh). Combinations:
    6.1-ours     Debian bookworm 6.1 + our dsproxy_oss.ko (6.1 has no virtio_snd at all)
    6.12-ours    bookworm-backports 6.12 + dsproxy_oss.ko
    6.12-stock   6.12 + the stock virtio_snd + snd-pcm-oss + snd-mixer-oss
    5.10-ours    Debian 11 bullseye 5.10 + dsproxy_oss.ko (play and record boots only)
    6.1-686-ours bookworm's 32-bit 6.1 (i386 kernel and userspace) + dsproxy_oss.ko (play and
                 record boots only)
Each combination boots its guest once per boot kind (five for the first three), each time with
a fresh dsproxy-device (new sockets) and fresh readers:
    play       several programs in sequence (the reader starts a new segment file per format):
               U8/8000/mono, S16/44100/stereo, S16/48000/stereo bit-exact in WAV and raw files,
               the -e log, an O_NONBLOCK writer polling GETOSPACE/GETODELAY, 5 s of audio taking
               5 s, /dev/mixer writes reaching the reader and a host-side change
               (dsproxy-host-reader -x --mixer vol=70) read back in the guest, and a
               Quake-style program playing through the mmap()ed DMA ring (tests/e2e/legacy.py)
    nopacing   the same 5 s with dsproxy-host-reader -d: much faster, still bit-exact
    record     the guest records what the reader injects (--inject), bit-exact, with read()
               and through the mmap()ed capture ring
    kill       QEMU is SIGKILLed mid-stream: the reader's files hold everything received, with a
               valid header, while the reader keeps running and after it stops
    apps       real OSS programs of Debian bookworm, copied from the host into their own image
               (build-initramfs.sh --host-prog): sox plays a WAV, mpg123 an MP3, ogg123 an Ogg
               Vorbis file; the captures are bit-exact to the WAV's data and to what the host's
               mpg123 -s / oggdec -R decode (on the stock path followed by snd-pcm-oss's
               silence up to the period boundary), and -e shows each program's params.
               Needs sox, libsox-fmt-oss, mpg123, lame, vorbis-tools (scripts/setup-host.sh)
    ci         verdicts on a real capture: a program plays, closes /dev/dsp, reopens it 0.3 s
               later and plays again, then (4 s later) a third time. dsproxy-host-reader
               --once (default --idle 1 s) must end by itself between the second and the third,
               with both plays in one file, and its --expect of them must say MATCH (exit 0)
               and leave --report/--junit/--plot; a reader expecting a golden with one sample
               changed must say MISMATCH at that sample (exit 3, after SIGINT); --duration 0.5
               must end by itself with exactly 0.5 s
    classic    (6.12-ours) /dev/audio, /dev/dsp1, open modes, full duplex, GETBLKSIZE/NONBLOCK/
               POST/GETTRIGGER/GETODELAY agreeing, 32-bit programs on the 64-bit kernel
               (tests/e2e/legacy.py)
and once, at the end:
    docs       docs/ci.md's job as written (beep.c and ci/sound-test.sh taken out of the page):
               exit 0 and all four artifacts; --check of its capture against a golden with one
               sample changed exits 3 naming the sample; both YAML jobs run the script and keep
               the artifacts
    demo       scripts/demo.sh (the README's main command) leaves a bit-exact out.wav and
               out.png, and ends with the reader's verdict line
QEMU's own emulated cards (the stand-in for Windows guests: AC97, Intel HDA, ich9 HDA,
virtio-sound-pci) have combinations and boots of their own, 6.12-ac97/6.12-hda/6.12-ich9/
6.12-virtio and wav/wav44 (QEMU's wav backend) and dbus (dsproxy-host-reader --qmp): see
tests/e2e/emulated.py.
Every check prints one PASS or FAIL line; the last line is "N passed, M failed". A missing
component (device not built, module missing...) makes the checks that need it FAIL.

Environment:
    E2E_ONLY=6.12-stock,6.1-ours   run only these combinations
    E2E_BOOTS=play,kill            run only these boots
    E2E_NO_BUILD=1                 do not build (use what build/ and the cargo target dir hold)
    E2E_DEVICE_BIN / E2E_READER_BIN  use these binaries instead of building them
    E2E_KEEP_GOING_AFTER_BUILD_FAILURE is implied: a failed build fails its dependent checks
    DSPROXY_BUILD_DIR, CARGO_TARGET_DIR as for the rest of the project
Logs of every boot: build/e2e/<combination>/<boot>/ (console.log, device.log, reader-*.log,
tap.log — what tap.py, a watching client, saw — and the captured files).
"""

import fcntl
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emulated  # noqa: E402
import legacy  # noqa: E402
import tap as tapmod  # noqa: E402
import wavfile  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BUILD = os.environ.get("DSPROXY_BUILD_DIR", os.path.join(REPO, "build"))
WORK = os.path.join(BUILD, "e2e")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
if not os.path.isabs(TARGET):
    TARGET = os.path.join(REPO, TARGET)
HOST_PLAY = os.path.join(BUILD, "progs", "host", "dsp-play")
HOST_RECORD = os.path.join(BUILD, "progs", "host", "dsp-record")

COMBOS = {
    "6.1-ours": {"flavor": "6.1", "driver": "ours"},
    "6.12-ours": {"flavor": "6.12", "driver": "ours",
                  "boots": ["play", "nopacing", "record", "kill", "apps", "classic", "ci"]},
    "6.12-stock": {"flavor": "6.12", "driver": "stock"},
    # Legacy guests (issue 10): the bit-exact, pacing, mixer and mmap checks of the play boot
    # and the record boot's captures; the other boots would add minutes and test nothing
    # kernel-specific.
    "5.10-ours": {"flavor": "5.10", "driver": "ours", "boots": ["play", "record"]},
    "6.1-686-ours": {"flavor": "6.1-686", "driver": "ours", "boots": ["play", "record"]},
}
BOOTS = ["play", "nopacing", "record", "kill", "apps", "qemulines", "classic", "ci", "docs", "demo"]
ONCE_BOOTS = ("docs", "demo")  # once, not per combination
# qemulines runs on the stock path only: it is about what Linux's virtio_snd does with a QEMU
# line that lacks controls=on (our module reads the real control count and copes).
DEFAULT_COMBO_BOOTS = ["play", "nopacing", "record", "kill", "apps", "qemulines", "ci"]


def combo_boots(combo):
    return COMBOS[combo].get("boots", DEFAULT_COMBO_BOOTS)

# Timing tolerances. The guest measures with its own monotonic clock (dsp-play's elapsed_ms:
# first write to close() returning), which under TCG still follows the host's clock.
PACING_TOLERANCE = 0.05  # 5 s of audio must take 5 s +- 5 %
NOPACING_MAX_RATIO = 0.5  # with -d: at most half the audio's duration


# ---- results ---------------------------------------------------------------------------------

class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []
        self.lines = []  # every PASS/FAIL line (the per-kernel table reads them)

    def check(self, name, ok, detail=""):
        line = f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else "")
        print(line, flush=True)
        self.lines.append(line)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            self.failures.append(line)
        return ok


R = Results()


def note(msg):
    print(f"e2e: {msg}", flush=True)


def run_logged(cmd, log_path, env=None, cwd=REPO, timeout=None):
    """Runs cmd with output to log_path; returns the exit status (or -1 on timeout)."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "wb") as log:
        try:
            return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                  env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return -1


def tail(path, n=15):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join("    | " + line for line in lines[-n:])
    except OSError:
        return "    | (no log)"


# ---- build -----------------------------------------------------------------------------------

class Built:
    device = None  # path or None
    reader = None
    kernels = {}  # flavor -> ok
    modules = {}  # flavor -> path or None
    progs = False
    images = {}  # combo -> path or None
    why = {}  # component -> reason it is missing


def build(combos, extra_flavors=()):
    no_build = os.environ.get("E2E_NO_BUILD") == "1"
    flavors = sorted({COMBOS[c]["flavor"] for c in combos} | set(extra_flavors))
    ours_flavors = sorted({COMBOS[c]["flavor"] for c in combos if COMBOS[c]["driver"] == "ours"})
    t0 = time.monotonic()

    # The Rust binaries, each on its own so that one crate's breakage does not hide the other.
    for attr, crate, env_name in (("device", "dsproxy-device", "E2E_DEVICE_BIN"),
                                  ("reader", "dsproxy-host-reader", "E2E_READER_BIN")):
        override = os.environ.get(env_name)
        path = override or os.path.join(TARGET, "release", crate)
        if not override and not no_build:
            log = os.path.join(WORK, f"build-{crate}.log")
            rc = run_logged(["cargo", "build", "--release", "--locked", "-p", crate], log)
            if not R.check(f"build: {crate}", rc == 0, "" if rc == 0 else f"cargo build failed (exit {rc}); {log}\n{tail(log)}"):
                Built.why[attr] = f"{crate} did not build"
                continue
        if os.access(path, os.X_OK):
            setattr(Built, attr, path)
        else:
            Built.why[attr] = f"{path} missing"
            if no_build or override:
                R.check(f"build: {crate}", False, f"{path} missing")

    if not no_build:
        log = os.path.join(WORK, "build-progs.log")
        rc = run_logged(["make", "-C", os.path.join(REPO, "images", "progs"),
                         f"OUT={os.path.join(BUILD, 'progs')}"], log)
        R.check("build: guest test programs", rc == 0, "" if rc == 0 else f"{log}\n{tail(log)}")
    Built.progs = os.access(HOST_PLAY, os.X_OK) and os.access(HOST_RECORD, os.X_OK)
    if not Built.progs:
        Built.why["progs"] = "build/progs/host/dsp-play missing"

    for flavor in flavors:
        kdir = os.path.join(BUILD, "kernels", flavor)
        if not no_build and not os.path.exists(os.path.join(kdir, ".done")):
            log = os.path.join(WORK, f"fetch-kernel-{flavor}.log")
            rc = run_logged([os.path.join(REPO, "scripts", "fetch-kernels.sh"), flavor], log)
            R.check(f"build: fetch kernel {flavor}", rc == 0, "" if rc == 0 else f"{log}\n{tail(log)}")
        Built.kernels[flavor] = os.path.exists(os.path.join(kdir, ".done"))
        if not Built.kernels[flavor]:
            Built.why[f"kernel-{flavor}"] = f"kernel {flavor} not fetched"

    for flavor in ours_flavors:
        ko = os.path.join(BUILD, "guest-driver", flavor, "dsproxy_oss.ko")
        if not no_build and Built.kernels.get(flavor):
            log = os.path.join(WORK, f"build-module-{flavor}.log")
            rc = run_logged([os.path.join(REPO, "scripts", "build-guest-driver.sh"), flavor], log)
            if not R.check(f"build: dsproxy_oss.ko for {flavor}", rc == 0,
                           "" if rc == 0 else f"{log}\n{tail(log)}"):
                Built.modules[flavor] = None
                Built.why[f"module-{flavor}"] = f"dsproxy_oss.ko for {flavor} did not build"
                continue
        Built.modules[flavor] = ko if os.path.exists(ko) else None
        if not Built.modules[flavor]:
            Built.why.setdefault(f"module-{flavor}", f"{ko} missing")
    note(f"build phase took {time.monotonic() - t0:.0f} s")


def build_image(combo, scripts, name="initramfs", extra=()):
    """The combination's initramfs with the boot scripts in /e2e/ (extra: more
    build-initramfs.sh arguments, e.g. --host-prog)."""
    c = COMBOS[combo]
    flavor = c["flavor"]
    if not Built.kernels.get(flavor):
        return None, Built.why.get(f"kernel-{flavor}", "no kernel")
    if not Built.progs:
        return None, Built.why["progs"]
    cdir = os.path.join(WORK, combo)
    args = [os.path.join(REPO, "images", "build-initramfs.sh"), flavor,
            os.path.join(cdir, f"{name}.cpio.gz")]
    if c["driver"] == "ours":
        ko = Built.modules.get(flavor)
        if not ko:
            return None, Built.why.get(f"module-{flavor}", "module missing")
        args += ["--module", ko]
    for script, text in scripts.items():
        path = os.path.join(cdir, "guest", f"{script}.sh")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        args += ["--file", f"{path}=/e2e/{script}.sh"]
    args += list(extra)
    log = os.path.join(cdir, f"build-{name}.log")
    rc = run_logged(args, log)
    if rc != 0:
        return None, f"build-initramfs failed: {log}\n{tail(log)}"
    return os.path.join(cdir, f"{name}.cpio.gz"), None


# ---- the programs each boot runs -------------------------------------------------------------

FORMATS = {"u8": {"afmt": "AFMT_U8", "bytes": 1, "silence": 0x80},
           "s16": {"afmt": "AFMT_S16_LE", "bytes": 2, "silence": 0x00}}


def frag_size(frag):
    return 1 << (frag & 0xFFFF)


class PlayStep:
    """One dsp-play run and what the host must find for it."""

    def __init__(self, name, driver, rate, fmt, channels, ms, frag=None, extra=(), timing=None,
                 whole_periods=None):
        self.name, self.rate, self.fmt, self.channels, self.frag = name, rate, fmt, channels, frag
        self.extra = list(extra)
        self.timing = timing  # None, "paced" or "unpaced"
        self.frame = FORMATS[fmt]["bytes"] * channels
        nbytes = rate * ms // 1000 * self.frame
        # snd-pcm-oss (the stock path) pads the last partial period with silence when it drains
        # (snd_pcm_oss_sync: "fill the rest of the period with silence" before the final write;
        # close() does the same), so a stock stream always ends on a period boundary: the file
        # holds the program's bytes plus up to one period of silence. The stock steps therefore
        # write whole periods and compare exactly; the "stock-pad" step checks the padding
        # claim itself. Our module has no such excuse: its steps end mid-period on purpose.
        if whole_periods is None:
            whole_periods = driver == "stock"
        if whole_periods:
            assert frag, "whole periods need a known fragment size"
            nbytes -= nbytes % frag_size(frag)
        self.nbytes = nbytes

    def args(self):
        a = ["dsp-play", "-r", str(self.rate), "-f", self.fmt, "-c", str(self.channels),
             "--bytes", str(self.nbytes), "--strict"]
        if self.frag:
            a += ["--frag", f"0x{self.frag:08x}"]
        return a + self.extra

    def host_args(self):
        return [HOST_PLAY, "--stdout", "-r", str(self.rate), "-f", self.fmt, "-c",
                str(self.channels), "--bytes", str(self.nbytes)]

    def bytes_per_ms(self):
        return self.rate * self.frame / 1000


def play_steps(driver):
    s = [
        PlayStep("u8-8000-mono", driver, 8000, "u8", 1, 1000, frag=0x0008000B),
        PlayStep("s16-44100-stereo", driver, 44100, "s16", 2, 1000, frag=0x0004000C),
        # Our module: the driver's default fragments, and an explicit SYNC before close.
        PlayStep("s16-48000-stereo", driver, 48000, "s16", 2, 1000,
                 frag=0x0004000C if driver == "stock" else None, extra=["--sync"]),
        PlayStep("nonblock-22050-mono", driver, 22050, "s16", 1, 1000, frag=0x0006000A,
                 extra=["--nonblock", "--write-size", "1000"]),
        PlayStep("paced-5s-48000-mono", driver, 48000, "s16", 1, 5000, frag=0x0004000C,
                 timing="paced"),
    ]
    if driver == "stock":
        # 5000 bytes with 2048-byte periods: 2 periods + 904 bytes.
        s.append(PlayStep("stock-pad-11025-stereo", driver, 11025, "u8", 2, 0, frag=0x0004000B,
                          whole_periods=False))
        s[-1].nbytes = 5000
    return s


MIXER_GUEST_SET = {"vol": (30, 30), "pcm": (40, 60)}
MIXER_HOST_TARGET = 70  # percent the host sets on the control behind /dev/mixer's vol
MIXER_REREADS = 16
MIXER_REREAD_MS = 500


def mixer_args():
    a = ["mixer-test"]
    for ch, (left, right) in MIXER_GUEST_SET.items():
        a += ["--set", f"{ch}={left}:{right}"]
    return a + ["--wait-ms", str(MIXER_REREAD_MS), "--repeat", str(MIXER_REREADS)]


def nopacing_step(driver):
    return PlayStep("unpaced-5s-48000-stereo", driver, 48000, "s16", 2, 5000, frag=0x0004000C,
                    timing="unpaced")


RECORD_RATE, RECORD_CHANNELS, RECORD_BYTES = 48000, 2, 192000  # 1 s of S16 stereo
INJECT_MS = 3000  # dsp-record takes the first second, dsp-mmap --record one more
KILL_PLAY = {"rate": 48000, "channels": 2, "ms": 30000}
KILL_AFTER_BYTES = 48000 * 4 * 3 // 2  # kill once 1.5 s of audio reached the tap


def guest_script(steps):
    """A busybox sh script running (name, argv) steps with markers around each."""
    lines = ["#!/bin/sh", "# Generated by tests/e2e/e2e.py: one boot's programs, in sequence.",
             "failed=0", "step() {", "\tname=$1; shift",
             "\techo \"E2E-STEP-BEGIN: $name\"", "\t\"$@\"", "\trc=$?",
             "\techo \"E2E-STEP-END: $name exit=$rc\"", "\t[ $rc -eq 0 ] || failed=1", "}"]
    for name, argv in steps:
        lines.append("step " + name + " " + " ".join(argv))
    lines.append("exit $failed")
    return "\n".join(lines) + "\n"


# ---- running one boot ------------------------------------------------------------------------

class Proc:
    def __init__(self, name, argv, log_path, cwd, env=None):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.log = open(log_path, "wb")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd,
                                  env=env, start_new_session=True)
        self.rc = None

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGINT, timeout=15):
        """Sends sig and waits; SIGKILL after timeout. Returns the exit status (None if it had
        to be killed)."""
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                self.rc = None
                self.log.close()
                return None
        self.rc = self.p.returncode
        self.log.close()
        return self.rc


def wait_for_path(path, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        if proc and not proc.alive():
            return False
        time.sleep(0.05)
    return os.path.exists(path)


class Boot:
    """Device + readers + tap client + guest for one boot; the analysis reads its results."""

    def __init__(self, combo, kind):
        self.combo, self.kind = combo, kind
        self.dir = os.path.join(WORK, combo, kind)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.error = None  # why the boot could not run at all
        self.console = ""
        self.guest_rc = None
        self.readers = {}
        self.device = None
        self.tap = None
        self.qemu = None
        self.shutdown = {}
        self.wall_s = 0.0
        self.events = {}

    def path(self, name):
        return os.path.join(self.dir, name)

    def run(self, image, driver, flavor, script, readers, timeout, during=None, after_guest=None,
            device_args=(), controls="on"):
        """readers: {name: [args after -u TAP]}. during(boot) runs in a thread while the guest
        runs; after_guest(boot) runs after the guest is gone and before the readers stop.
        device_args: extra dsproxy-device options; controls: vhost-user-snd-pci's controls=."""
        t0 = time.monotonic()
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        vhost_sock, tap_sock = self.path("vhost.sock"), self.path("tap.sock")
        try:
            self.device = Proc("device", [Built.device, "--socket", vhost_sock, "--tap", tap_sock,
                                          "--wait-for-reader"] + list(device_args),
                               self.path("device.log"), self.dir, env)
            if not wait_for_path(tap_sock, 15, self.device):
                self.error = (f"dsproxy-device did not create its tap socket (exit {self.device.p.poll()}); "
                              f"{self.path('device.log')}\n{tail(self.path('device.log'))}")
                return
            for name, args in readers.items():
                self.readers[name] = Proc(f"reader-{name}", [Built.reader, "-u", tap_sock] + args,
                                          self.path(f"reader-{name}.log"), self.dir, env)
            try:
                self.tap_log = open(self.path("tap.log"), "w")
                self.tap = tapmod.TapClient(tap_sock, log=self.tap_log)
            except (tapmod.TapError, OSError) as e:
                self.error = f"tap client could not attach: {e}"
                return
            if not wait_for_path(vhost_sock, 15, self.device):
                self.error = (f"dsproxy-device did not create its vhost-user socket; "
                              f"{self.path('device.log')}\n{tail(self.path('device.log'))}")
                return
            # Give the readers a moment to subscribe (the guest needs seconds to boot anyway).
            time.sleep(0.3)
            for name, r in self.readers.items():
                if not r.alive():
                    self.error = (f"reader {name} exited at once (status {r.p.returncode}); "
                                  f"{r.log_path}\n{tail(r.log_path)}")
                    return
            cmd = [os.path.join(REPO, "scripts", "guest-run.sh"), "--flavor", flavor,
                   "--initramfs", image, "--snd", "vhost-user", vhost_sock, "--controls", controls,
                   "--driver", driver, "--run", f"sh /e2e/{script}.sh", "--quiet",
                   "--log", self.path("console.log"), "--timeout", str(timeout),
                   "--", "-pidfile", self.path("qemu.pid")]
            self.qemu = Proc("guest-run", cmd, self.path("guest-run.log"), self.dir, env)
            th = None
            if during:
                th = threading.Thread(target=during, args=(self,), daemon=True)
                th.start()
            try:
                self.qemu.p.wait(timeout=timeout + 30)
            except subprocess.TimeoutExpired:
                self.kill_qemu()
                self.qemu.p.wait()
            self.guest_rc = self.qemu.p.returncode
            self.qemu.log.close()
            if th:
                th.join(timeout=30)
            try:
                with open(self.path("console.log"), "rb") as f:
                    self.console = f.read().decode("utf-8", "replace")
            except OSError:
                self.error = (f"no console log: guest-run exit {self.guest_rc}; "
                              f"{self.qemu.log_path}\n{tail(self.qemu.log_path)}")
                return
            if after_guest:
                after_guest(self)
            # The device completed the guest's last buffers only after handing them to the
            # readers; a short pause lets the readers write what they hold before the signal.
            time.sleep(0.5)
        finally:
            for name, r in self.readers.items():
                self.shutdown[f"reader-{name}"] = r.stop(signal.SIGINT)
            if self.tap:
                self.tap.close()
                self.tap_log.close()
            if self.device:
                self.shutdown["device"] = self.device.stop(signal.SIGINT)
            if self.qemu and self.qemu.alive():
                self.kill_qemu()
            self.wall_s = time.monotonic() - t0
            note(f"{self.combo} {self.kind}: boot wall time {self.wall_s:.1f} s, guest-run exit "
                 f"{self.guest_rc}; {self.guest_timing()}; logs in {self.dir}")

    def qemu_pid(self):
        try:
            with open(self.path("qemu.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def kill_qemu(self):
        pid = self.qemu_pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
                return True
            except ProcessLookupError:
                pass
        return False

    def guest_timing(self):
        try:
            with open(self.path("guest-run.log")) as f:
                m = re.findall(r"guest-run: (exit=.*)", f.read())
            return m[-1] if m else "no guest-run summary"
        except OSError:
            return "no guest-run log"

    # -- console parsing --
    def step_output(self, name):
        """(lines, exit status or None) of one step of the guest script."""
        lines, inside, rc = [], False, None
        for line in self.console.splitlines():
            if re.search(rf"E2E-STEP-BEGIN: {re.escape(name)}$", line):
                inside = True
                continue
            m = re.search(rf"E2E-STEP-END: {re.escape(name)} exit=(\d+)", line)
            if m:
                rc = int(m.group(1))
                break
            if inside:
                lines.append(line)
        return lines, rc

    def shutdown_detail(self):
        return ", ".join(f"{k} exit {v if v is not None else 'killed after 15 s'}"
                         for k, v in self.shutdown.items())

    def reader_log(self, name):
        try:
            with open(self.path(f"reader-{name}.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


# ---- analysis helpers ------------------------------------------------------------------------

_signal_cache = {}


def expected_bytes(argv):
    key = tuple(argv)
    if key not in _signal_cache:
        _signal_cache[key] = subprocess.run(argv, stdout=subprocess.PIPE, check=True).stdout
    return _signal_cache[key]


def segments(directory, ext):
    """[(segment number, path)] of stream 0's capture files: out.EXT, out.seg2.EXT, ..."""
    out = []
    for f in os.listdir(directory):
        m = re.fullmatch(rf"out(?:\.seg(\d+))?\.{ext}", f)
        if m:
            out.append((int(m.group(1) or 1), os.path.join(directory, f)))
    return sorted(out)


def kv(lines, prefix, key):
    """The value of key=... on the last line starting (anywhere) with prefix that has it."""
    val = None
    for line in lines:
        if prefix in line:
            m = re.search(rf"\b{key}=(\S+)", line)
            if m:
                val = m.group(1)
    return val


def is_english_line(ln):
    """A reader's -e line about its main stream (no "[stream N]" tag)."""
    return "=>" in ln and "[stream" not in ln or ln.strip().startswith("SNDCTL_DSP_SYNC")


def english_lines(text):
    return [ln for ln in text.splitlines() if is_english_line(ln)]


ENGLISH_PARAMS = (("rate", r"SNDCTL_DSP_SPEED\s*=>\s*(\d+)"),
                  ("fmt", r"SNDCTL_DSP_SETFMT\s*=>\s*(\w+)"),
                  ("channels", r"SNDCTL_DSP_CHANNELS\s*=>\s*(\d+)"),
                  ("frag", r"SNDCTL_DSP_SETFRAGMENT\s*=>\s*(\d+ x \d+)"))


def english_states(text):
    """Replays the -e lines; yields the (rate, fmt, channels, frag) state after each line."""
    state = {}
    for ln in english_lines(text):
        for key, rx in ENGLISH_PARAMS:
            m = re.search(rx, ln)
            if m:
                state[key] = m.group(1)
                yield dict(state)


def english_states_at_recording(text):
    """{file name: the (rate, fmt, channels, frag) state when the reader's -e log says
    "-- recording stream 0 to FILE"}: the params the audio in FILE was played with, whatever
    a program set (and the card was told) before, e.g. while probing formats."""
    state, at = {}, {}
    for ln in text.splitlines():
        m = re.search(r"^-- recording stream 0 to (\S+)", ln)
        if m:
            at[os.path.basename(m.group(1))] = dict(state)
            continue
        if not is_english_line(ln):
            continue
        for key, rx in ENGLISH_PARAMS:
            m = re.search(rx, ln)
            if m:
                state[key] = m.group(1)
    return at


# ---- the boots -------------------------------------------------------------------------------

def boot_unavailable(combo, kind, image_err):
    missing = []
    if not Built.device:
        missing.append(Built.why.get("device", "dsproxy-device missing"))
    if not Built.reader:
        missing.append(Built.why.get("reader", "dsproxy-host-reader missing"))
    if image_err:
        missing.append(image_err)
    return "; ".join(missing) if missing else None


class Checks:
    """Declares a boot's checks up front, so that a boot that cannot run (or an analysis that
    stops early) still reports every one of them as FAIL instead of skipping silently."""

    def __init__(self, prefix, names):
        self.prefix, self.pending = prefix, list(names)

    def check(self, name, ok, detail=""):
        if name in self.pending:
            self.pending.remove(name)
        return R.check(f"{self.prefix} {name}", ok, detail)

    def fail_rest(self, why):
        """Fails every check not reported yet; a long reason is printed once, the checks get
        its first line."""
        if not self.pending:
            return
        if "\n" in why:
            note(f"{self.prefix}: {why}")
        for name in list(self.pending):
            self.check(name, False, why.splitlines()[0] if why else "not evaluated")


def run_play(combo, image, image_err):
    c = COMBOS[combo]
    steps = play_steps(c["driver"])
    names = ["guest runs the programs"]
    for s in steps:
        if s.name.startswith("stock-pad"):
            names += [f"{s.name}: snd-pcm-oss pads the last partial period with silence"]
            continue
        names += [f"{s.name}: dsp-play ok", f"{s.name}: WAV bit-exact with a valid header",
                  f"{s.name}: raw file bit-exact", f"{s.name}: -e log shows SPEED/SETFMT/CHANNELS/SETFRAGMENT"]
        if "--nonblock" in s.extra:
            names.append(f"{s.name}: O_NONBLOCK writer polled GETOSPACE/GETODELAY")
        if s.timing == "paced":
            names.append(f"{s.name}: 5 s of audio takes 5 s (+-{PACING_TOLERANCE:.0%})")
    names += legacy.mmap_play_names(c["driver"])
    names += ["mixer: guest /dev/mixer writes reach the reader (-e SOUND_MIXER_WRITE_*)",
              "mixer: a control set on the host is read back in the guest",
              "shutdown: device and readers exit 0 on SIGINT"]
    ck = Checks(f"{combo} play", names)
    why = boot_unavailable(combo, "play", image_err)
    if why:
        ck.fail_rest(why)
        return None

    host_set = {}

    def during(boot):
        # Once the guest has written its vol channel, change that control from the host with
        # the one-shot `dsproxy-host-reader -x --mixer vol=N` (it exits 0 once the device has
        # confirmed the change). The tap client only watches for the guest's write.
        tap = boot.tap
        ctl = tap.control("Master Playback Volume")  # what OSS's vol is on this card
        if ctl is None:
            host_set["error"] = f"the card has no Master Playback Volume (controls: {[x['name'] for x in tap.hello['controls']]})"
            return
        host_set["ctl"] = ctl
        seen = tap.wait_for(lambda t: any(r["kind"] == "CONTROL" and r["id"] == ctl["id"]
                                          and r["origin"] == "guest" for r in t.records), 240)
        if not seen:
            host_set["error"] = f"no guest write of {ctl['name']!r} seen on the tap"
            return
        time.sleep(0.6)
        # --mixer takes the control's own range (0..100 on dsproxy-device).
        raw = ctl["min"] + round((ctl["max"] - ctl["min"]) * MIXER_HOST_TARGET / 100)
        argv = [Built.reader, "-u", boot.path("tap.sock"), "-x", "--mixer", f"vol={raw}"]
        log_path = boot.path("reader-mixer.log")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")  # the log then says when the device confirmed
        rc = run_logged(argv, log_path, env=env, cwd=boot.dir, timeout=30)
        host_set["argv"] = " ".join(argv[3:])
        if rc != 0:
            host_set["error"] = (f"{host_set['argv']} exited {rc if rc >= 0 else 'never (killed after 30 s)'}; "
                                 f"{log_path}\n{tail(log_path)}")
            return
        host_set["raw"] = raw
        host_set["t"] = time.monotonic()

    boot = Boot(combo, "play")
    boot.run(image, c["driver"], c["flavor"], "play",
             {"wav": ["-x", "-e", "-f", "out.wav"], "raw": ["-x", "-f", "out.pcm"]},
             timeout=300, during=during)
    if boot.error:
        ck.fail_rest(boot.error)
        return boot
    ran = "DSPROXY-GUEST: run:" in boot.console and boot.guest_rc not in (124, 125, 126)
    ck.check("guest runs the programs", ran,
             f"guest-run exit {boot.guest_rc}; {boot.path('console.log')}" +
             ("" if ran else "\n" + tail(boot.path("console.log"), 25)))

    wav_segs = segments(boot.dir, "wav")
    raw_segs = dict(segments(boot.dir, "pcm"))
    seg_info = {n: wavfile.parse_wav(p) for n, p in wav_segs}
    seg_desc = "; ".join(f"{os.path.basename(p)}: {seg_info[n].get('rate')}/{seg_info[n].get('bits')}bit/"
                         f"{seg_info[n].get('channels')}ch {seg_info[n].get('data_actual', 0)} bytes"
                         for n, p in wav_segs) or "no out*.wav files"
    eng = boot.reader_log("wav")
    states = list(english_states(eng))
    used_seg, state_pos = 0, 0
    for s in steps:
        lines, rc = boot.step_output(s.name)
        want = expected_bytes(s.host_args())
        sil = FORMATS[s.fmt]["silence"]
        if s.name.startswith("stock-pad"):
            name = f"{s.name}: snd-pcm-oss pads the last partial period with silence"
            seg = next(((n, p) for n, p in wav_segs if n > used_seg and seg_info[n].get("rate") == s.rate
                        and seg_info[n].get("channels") == s.channels), None)
            if rc != 0 or seg is None:
                ck.check(name, False, f"dsp-play exit {rc}; segments: {seg_desc}")
                continue
            used_seg = seg[0]
            got = wavfile.wav_data(seg[1], seg_info[seg[0]])
            period = frag_size(s.frag)
            pad = got[len(want):]
            ok = (got[:len(want)] == want and all(b == sil for b in pad) and len(pad) < period)
            if ok and pad:
                detail = (f"yes: {len(want)} bytes written, {len(got)} in the file = "
                          f"{len(pad)} bytes of silence up to the {period}-byte period boundary"
                          if len(got) % period == 0 else
                          f"{len(pad)} bytes of silence after the {len(want)} written (not up to a period boundary)")
                ok = len(got) % period == 0
            elif ok:
                detail = "no padding observed: the file holds exactly the bytes written"
            else:
                detail = wavfile.describe_difference(got, want, sil, s.bytes_per_ms())
            ck.check(name, ok, detail)
            continue

        playing = kv(lines, "DSP-PLAY: playing", "bytes")
        ck.check(f"{s.name}: dsp-play ok", rc == 0 and playing == str(s.nbytes),
                 f"exit {rc}" + ("" if rc == 0 else ": " + " | ".join(ln.strip() for ln in lines[-6:])))
        # WAV: the next segment in this step's format.
        seg = next(((n, p) for n, p in wav_segs if n > used_seg and seg_info[n].get("rate") == s.rate
                    and seg_info[n].get("channels") == s.channels
                    and seg_info[n].get("bits") == 8 * FORMATS[s.fmt]["bytes"]), None)
        name = f"{s.name}: WAV bit-exact with a valid header"
        if seg is None:
            ck.check(name, False, f"no segment in {s.rate}/{8 * FORMATS[s.fmt]['bytes']}bit/{s.channels}ch; "
                     f"segments: {seg_desc}")
            ck.check(f"{s.name}: raw file bit-exact", False, "no matching WAV segment to pair it with")
        else:
            used_seg = seg[0]
            info = seg_info[seg[0]]
            if info["problems"]:
                ck.check(name, False, f"{os.path.basename(seg[1])}: " + "; ".join(info["problems"]))
            else:
                got = wavfile.wav_data(seg[1], info)
                diff = wavfile.describe_difference(got, want, sil, s.bytes_per_ms())
                ck.check(name, diff is None, f"{os.path.basename(seg[1])}: " + (diff or f"{len(got)} bytes exact"))
            raw = raw_segs.get(seg[0])
            name = f"{s.name}: raw file bit-exact"
            if raw is None:
                ck.check(name, False, f"no raw segment {seg[0]} (raw files: {sorted(os.path.basename(p) for p in raw_segs.values())})")
            else:
                with open(raw, "rb") as f:
                    got = f.read()
                diff = wavfile.describe_difference(got, want, sil, s.bytes_per_ms())
                ck.check(name, diff is None, f"{os.path.basename(raw)}: " + (diff or f"{len(got)} bytes exact"))
        # -e: the stream's parameters as the driver set them (for SETFRAGMENT: what GETOSPACE
        # reported, which is what the driver configured).
        fragstotal = kv(lines, "DSP-PLAY: GETOSPACE", "fragstotal")
        fragsize = kv(lines, "DSP-PLAY: GETOSPACE", "fragsize")
        want_state = {"rate": str(s.rate), "fmt": FORMATS[s.fmt]["afmt"], "channels": str(s.channels),
                      "frag": f"{fragstotal} x {fragsize}"}
        found = next((i for i in range(state_pos, len(states)) if states[i] == want_state), None)
        name = f"{s.name}: -e log shows SPEED/SETFMT/CHANNELS/SETFRAGMENT"
        if found is not None:
            state_pos = found + 1
            ck.check(name, True, f"{want_state}")
        else:
            near = [st for st in states[state_pos:] if st.get("rate") == str(s.rate)]
            ck.check(name, False, f"want {want_state}; states with that rate in the -e log: "
                     f"{near[-3:] or 'none'}; {boot.path('reader-wav.log')}")
        if "--nonblock" in s.extra:
            polls = kv(lines, "DSP-PLAY: nonblock", "polls")
            omax = kv(lines, "DSP-PLAY: nonblock", "odelay_max")
            ok = rc == 0 and polls is not None and int(polls) > 0 and omax is not None and int(omax) > 0
            ck.check(f"{s.name}: O_NONBLOCK writer polled GETOSPACE/GETODELAY", ok,
                     next((ln.strip() for ln in lines if "nonblock" in ln), f"no nonblock line (exit {rc})"))
        if s.timing == "paced":
            el = kv(lines, "DSP-PLAY: elapsed_ms", "elapsed_ms")
            audio = s.nbytes / s.bytes_per_ms()
            name = f"{s.name}: 5 s of audio takes 5 s (+-{PACING_TOLERANCE:.0%})"
            if el is None or rc != 0:
                ck.check(name, False, f"no elapsed_ms (dsp-play exit {rc})")
            else:
                ratio = float(el) / audio
                ck.check(name, abs(ratio - 1) <= PACING_TOLERANCE,
                         f"{audio:.0f} ms of audio took {float(el):.0f} ms in the guest ({ratio:.3f}x)")
                TIMINGS[f"{combo} paced"] = f"{audio:.0f} ms audio -> {float(el):.0f} ms ({ratio:.3f}x)"

    # OSS mmap, the way Quake plays (tests/e2e/legacy.py)
    used_seg = legacy.check_mmap_play(ck, boot, combo, c["driver"], wav_segs, seg_info, used_seg)

    # Mixer: guest writes -> reader's -e log; host write -> guest rereads.
    lines, rc = boot.step_output("mixer")
    wrote = {}
    for ln in lines:
        m = re.search(r"MIXER: set (\w+)=\d+:\d+ -> (\d+):(\d+)", ln)
        if m:
            wrote[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    oss_name = {"vol": "VOLUME", "pcm": "PCM"}
    problems = []
    for ch, (left, right) in MIXER_GUEST_SET.items():
        if ch not in wrote:
            problems.append(f"guest's MIXER_WRITE({ch}) failed or did not run (mixer-test exit {rc})")
            continue
        vals = [(int(a), int(b)) for a, b in re.findall(
            rf"SOUND_MIXER_WRITE_{oss_name[ch]}\s*=>\s*(\d+):(\d+)\s*$", eng, re.M)]
        if not any(abs(a - left) <= 1 and abs(b - right) <= 1 for a, b in vals):
            problems.append(f"no 'SOUND_MIXER_WRITE_{oss_name[ch]} => {left}:{right}' in the -e log"
                            f" (found {vals or 'none'})")
    ck.check("mixer: guest /dev/mixer writes reach the reader (-e SOUND_MIXER_WRITE_*)", not problems,
             "; ".join(problems) or f"guest wrote {wrote}")
    name = "mixer: a control set on the host is read back in the guest"
    if "error" in host_set:
        ck.check(name, False, host_set["error"])
    elif "raw" not in host_set:
        ck.check(name, False, "dsproxy-host-reader --mixer never ran")
    else:
        rereads = {}
        for ln in lines:
            m = re.search(r"MIXER: reread\[(\d+)\] vol=(\d+):(\d+)", ln)
            if m:
                rereads.setdefault(int(m.group(1)), (int(m.group(2)), int(m.group(3))))
        rereads = [rereads[k] for k in sorted(rereads)]
        # The guest's own write must have read back first (so the later value is the host's).
        readback = None
        for ln in lines:
            m = re.search(r"MIXER: readback vol=(\d+):(\d+)", ln)
            if m:
                readback = (int(m.group(1)), int(m.group(2)))
        last = rereads[-1] if rereads else None
        guest_vol = MIXER_GUEST_SET["vol"]
        # The recording reader (-e) saw the change as another reader's.
        echoed = re.search(rf"^SOUND_MIXER_WRITE_VOLUME => {MIXER_HOST_TARGET}:{MIXER_HOST_TARGET}"
                           r"  \(set by a host reader\)$", eng, re.M) is not None
        ok = (readback is not None and all(abs(a - b) <= 1 for a, b in zip(readback, guest_vol))
              and last is not None and all(abs(v - MIXER_HOST_TARGET) <= 1 for v in last) and echoed)
        ck.check(name, ok, f"guest wrote vol {guest_vol}, read back {readback}; `dsproxy-host-reader "
                 f"{host_set['argv']}` set {host_set['ctl']['name']!r} to {host_set['raw']} "
                 f"({MIXER_HOST_TARGET}%) and exited 0; the -e reader logged it: {'yes' if echoed else 'NO'}; "
                 f"guest rereads of vol every {MIXER_REREAD_MS} ms: {rereads or 'none'} (mixer-test exit {rc})")
    ck.check("shutdown: device and readers exit 0 on SIGINT",
             all(v == 0 for v in boot.shutdown.values()), boot.shutdown_detail())
    ck.fail_rest("not evaluated")
    return boot


def run_nopacing(combo, image, image_err):
    c = COMBOS[combo]
    s = nopacing_step(c["driver"])
    ck = Checks(f"{combo} nopacing", [f"{s.name}: dsp-play ok",
                                      f"{s.name}: with -d, 5 s of audio takes < {NOPACING_MAX_RATIO:.0%} of that",
                                      f"{s.name}: WAV bit-exact with a valid header"])
    why = boot_unavailable(combo, "nopacing", image_err)
    if why:
        ck.fail_rest(why)
        return None
    boot = Boot(combo, "nopacing")
    boot.run(image, c["driver"], c["flavor"], "nopacing", {"wav": ["-x", "-d", "-e", "-f", "out.wav"]},
             timeout=180)
    if boot.error:
        ck.fail_rest(boot.error)
        return boot
    lines, rc = boot.step_output(s.name)
    ck.check(f"{s.name}: dsp-play ok", rc == 0, f"exit {rc}; guest-run exit {boot.guest_rc}" +
             ("" if rc == 0 else "\n" + tail(boot.path("console.log"), 20)))
    el = kv(lines, "DSP-PLAY: elapsed_ms", "elapsed_ms")
    audio = s.nbytes / s.bytes_per_ms()
    name = f"{s.name}: with -d, 5 s of audio takes < {NOPACING_MAX_RATIO:.0%} of that"
    if el is None or rc != 0:
        ck.check(name, False, f"no elapsed_ms (exit {rc})")
    else:
        ratio = float(el) / audio
        ck.check(name, ratio <= NOPACING_MAX_RATIO,
                 f"{audio:.0f} ms of audio took {float(el):.0f} ms ({1 / ratio if ratio else float('inf'):.1f}x real time)")
        TIMINGS[f"{combo} unpaced (-d)"] = f"{audio:.0f} ms audio -> {float(el):.0f} ms ({1 / ratio if ratio else 0:.1f}x faster)"
    want = expected_bytes(s.host_args())
    segs = segments(boot.dir, "wav")
    name = f"{s.name}: WAV bit-exact with a valid header"
    if not segs:
        ck.check(name, False, "no out.wav")
    else:
        info = wavfile.parse_wav(segs[0][1])
        if info["problems"]:
            ck.check(name, False, "; ".join(info["problems"]))
        else:
            diff = wavfile.describe_difference(wavfile.wav_data(segs[0][1], info), want, 0, s.bytes_per_ms())
            extra = f" (other segments: {[os.path.basename(p) for _, p in segs[1:]]})" if len(segs) > 1 else ""
            ck.check(name, diff is None and len(segs) == 1, (diff or f"{len(want)} bytes exact") + extra)
    return boot


def qemulines_step():
    return PlayStep("s16-48000-stereo-1s", "stock", 48000, "s16", 2, 1000, frag=0x0004000C)


def qemulines_script():
    s = qemulines_step()
    return guest_script([(s.name, s.args())])


def run_qemulines(combo, image, image_err):
    """The QEMU line QEMU's and rust-vmm's docs show, without controls=on, twice: in front of a
    card with controls (the guest's virtio_snd fails to probe: both the daemon's log and every
    reader must say why and name the fix), and in front of `dsproxy-device --no-controls` (the
    other fix: it plays, bit-exact)."""
    c = COMBOS[combo]
    s = qemulines_step()
    names = ["no controls=on + card with controls: the guest has no /dev/dsp",
             "no controls=on + card with controls: one error in the device log naming both fixes",
             "no controls=on + card with controls: the reader prints the device's error",
             "no controls=on + --no-controls: plays, WAV bit-exact"]
    ck = Checks(f"{combo} qemulines", names)
    why = boot_unavailable(combo, "qemulines", image_err)
    if why:
        ck.fail_rest(why)
        return None
    boot = Boot(combo, "qemulines")
    boot.run(image, c["driver"], c["flavor"], "qemulines", {"wav": ["-x", "-f", "out.wav"]},
             timeout=90, controls="off")
    if boot.error:
        ck.fail_rest(boot.error)
        return boot
    lines, rc = boot.step_output(s.name)
    ck.check(names[0], rc not in (None, 0) and not segments(boot.dir, "wav"),
             f"dsp-play exit {rc} (it must fail to open /dev/dsp); console: "
             + " | ".join(l for l in boot.console.splitlines() if "virtio" in l.lower())[:300])
    with open(boot.path("device.log"), encoding="utf-8", errors="replace") as f:
        errs = [l for l in f if "ERROR" in l and "controls=on, but" in l]
    ck.check(names[1], len(errs) == 1 and "--no-controls" in errs[0] and "add controls=on" in errs[0],
             f"{len(errs)} line(s): {errs[0].strip()[:200] if errs else 'none'}")
    rlog = boot.reader_log("wav")
    ck.check(names[2], "device error: the frontend's virtio-snd config space is 12 bytes" in rlog,
             tail(boot.path("reader-wav.log"), 5))

    boot2 = Boot(combo, "qemulines-nocontrols")
    boot2.run(image, c["driver"], c["flavor"], "qemulines", {"wav": ["-x", "-f", "out.wav"]},
              timeout=90, controls="off", device_args=["--no-controls"])
    if boot2.error:
        ck.fail_rest(boot2.error)
        return boot2
    lines, rc = boot2.step_output(s.name)
    segs = segments(boot2.dir, "wav")
    detail = f"dsp-play exit {rc}"
    ok = False
    if rc == 0 and segs:
        info = wavfile.parse_wav(segs[0][1])
        diff = (wavfile.describe_difference(wavfile.wav_data(segs[0][1], info),
                                            expected_bytes(s.host_args()), 0, s.bytes_per_ms())
                if not info["problems"] else "; ".join(info["problems"]))
        ok = diff is None and len(segs) == 1
        detail += "; " + (diff or f"{s.nbytes} bytes exact")
    elif rc != 0:
        detail += "\n" + tail(boot2.path("console.log"), 20)
    ck.check(names[3], ok, detail)
    return boot2


def write_wav(path, data, rate, channels, bits):
    frame = channels * bits // 8
    with open(path, "wb") as f:
        f.write(struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1,
                            channels, rate, rate * frame, frame, bits, b"data", len(data)))
        f.write(data)


def run_record(combo, image, image_err):
    c = COMBOS[combo]
    name_ok = "dsp-record reads the injected audio bit-exact"
    ck = Checks(f"{combo} record", [name_ok, legacy.MMAP_RECORD_NAME])
    why = boot_unavailable(combo, "record", image_err)
    if why:
        ck.fail_rest(why)
        return None
    boot = Boot(combo, "record")
    inject = expected_bytes([HOST_PLAY, "--stdout", "-r", str(RECORD_RATE), "-f", "s16", "-c",
                             str(RECORD_CHANNELS), "--ms", str(INJECT_MS)])
    write_wav(boot.path("inject.wav"), inject, RECORD_RATE, RECORD_CHANNELS, 16)
    boot.run(image, c["driver"], c["flavor"], "record",
             {"wav": ["-x", "-e", "--inject", "inject.wav", "-f", "out.wav"]}, timeout=180)
    if boot.error:
        ck.fail_rest(boot.error)
        return boot
    lines, rc = boot.step_output("record")
    want = subprocess.run([HOST_RECORD, "--stdin", "--bytes", str(RECORD_BYTES)], input=inject,
                          stdout=subprocess.PIPE, check=True).stdout.decode()
    want_hash = re.search(r"fnv1a64=([0-9a-f]+)", want).group(1)
    got_bytes = kv(lines, "DSP-RECORD: bytes", "bytes")
    got_hash = kv(lines, "DSP-RECORD: bytes", "fnv1a64")
    head = kv(lines, "DSP-RECORD: head", "head")
    skipped = kv(lines, "DSP-RECORD: skipped", "skipped_silence_bytes") or "0"
    ok = rc == 0 and got_bytes == str(RECORD_BYTES) and got_hash == want_hash
    # The card fills capture buffers with silence until injected audio is there (documented in
    # docs/wire-format.md), and the reader injects only once the stream is prepared: the
    # guest's first reads may be silence. dsp-record --skip-silence drops those whole silent
    # frames; from the first sound on, every byte must be the injected one.
    detail = (f"guest read {got_bytes} bytes fnv1a64={got_hash} after {skipped} bytes of leading "
              f"silence; injected prefix fnv1a64={want_hash}")
    if not ok:
        detail += (f"; dsp-record exit {rc}; guest head={head}; injected head={inject[:32].hex()}"
                   + ("" if got_bytes else "\n" + tail(boot.path("console.log"), 20)))
        if head and len(head) >= 16:
            at = inject.find(bytes.fromhex(head[:32]))
            if at > 0:
                detail += f" (the guest's first bytes are injected bytes from offset {at})"
    ck.check(name_ok, ok, detail)
    legacy.check_mmap_record(ck, boot, inject)
    return boot


def run_kill(combo, image, image_err):
    c = COMBOS[combo]
    names = ["guest killed mid-stream", "WAV finalized while the reader keeps running",
             "raw file holds a prefix of the signal", "after SIGINT the reader exits 0 and the WAV holds everything received"]
    ck = Checks(f"{combo} kill", names)
    why = boot_unavailable(combo, "kill", image_err)
    if why:
        ck.fail_rest(why)
        return None
    k = KILL_PLAY
    full = expected_bytes([HOST_PLAY, "--stdout", "-r", str(k["rate"]), "-f", "s16", "-c",
                           str(k["channels"]), "--ms", str(k["ms"])])
    state = {}

    def during(boot):
        got = boot.tap.wait_for(lambda t: t.pcm_bytes.get(0, 0) >= KILL_AFTER_BYTES, 150)
        if not got:
            state["error"] = f"only {boot.tap.pcm_bytes.get(0, 0)} PCM bytes reached the tap; not killing"
            return
        state["tap_bytes_at_kill"] = boot.tap.pcm_bytes.get(0, 0)
        state["killed"] = boot.kill_qemu()
        state["t_kill"] = time.monotonic()

    def after_guest(boot):
        # The reader keeps running: its file must become valid without being told to stop.
        out = boot.path("out.wav")
        deadline = time.monotonic() + 5
        info = None
        while time.monotonic() < deadline:
            if os.path.exists(out):
                info = wavfile.parse_wav(out)
                if not info["problems"] and info.get("data_len", 0) > 0:
                    break
            time.sleep(0.2)
        state["live_info"] = info
        state["live_data"] = wavfile.wav_data(out, info) if info and "data_offset" in info else b""
        state["tap_bytes_final"] = boot.tap.pcm_bytes.get(0, 0) if boot.tap else None
        state["tap_gaps"] = boot.tap.gaps.get(0, 0) if boot.tap else None

    boot = Boot(combo, "kill")
    boot.run(image, c["driver"], c["flavor"], "kill",
             {"wav": ["-x", "-e", "-f", "out.wav"], "raw": ["-x", "-f", "out.pcm"]},
             timeout=180, during=during, after_guest=after_guest)
    if boot.error:
        ck.fail_rest(boot.error)
        return boot
    if "error" in state or not state.get("killed"):
        ck.fail_rest(state.get("error", f"QEMU was not killed (guest-run exit {boot.guest_rc})"))
        return boot
    ck.check("guest killed mid-stream", boot.guest_rc == 126,
             f"SIGKILL after {state['tap_bytes_at_kill']} bytes reached the tap; guest-run exit {boot.guest_rc}")
    info, data = state["live_info"], state["live_data"]
    name = "WAV finalized while the reader keeps running"
    if info is None:
        ck.check(name, False, "no out.wav")
    else:
        problems = list(info["problems"])
        if not data:
            problems.append("no audio in it")
        elif full[:len(data)] != data:
            problems.append(wavfile.describe_difference(data, full[:len(data)], 0, 192))
        if len(data) < state["tap_bytes_at_kill"] - 4 * 48000 * 2:  # the tap may run ahead a little
            problems.append(f"holds {len(data)} bytes, but {state['tap_bytes_at_kill']} had reached the tap at the kill")
        ck.check(name, not problems, "; ".join(problems) or
                 f"{len(data)} bytes ({len(data) / 192:.0f} ms) of signal, header consistent, 5 s after the kill")
    raws = segments(boot.dir, "pcm")
    name = "raw file holds a prefix of the signal"
    if not raws:
        ck.check(name, False, "no out.pcm")
    else:
        with open(raws[0][1], "rb") as f:
            raw = f.read()
        ok = len(raw) > 0 and full[:len(raw)] == raw and len(raws) == 1
        ck.check(name, ok, f"{len(raw)} bytes" + ("" if ok else ": " + (wavfile.describe_difference(raw, full[:len(raw)]) or f"segments {raws}")))
    name = "after SIGINT the reader exits 0 and the WAV holds everything received"
    info2 = wavfile.parse_wav(boot.path("out.wav")) if os.path.exists(boot.path("out.wav")) else None
    problems = []
    if boot.shutdown.get("reader-wav") != 0:
        problems.append(f"reader exit {boot.shutdown.get('reader-wav')}")
    if info2 is None:
        problems.append("no out.wav")
    else:
        problems += info2["problems"]
        if not info2["problems"]:
            d2 = wavfile.wav_data(boot.path("out.wav"), info2)
            if full[:len(d2)] != d2:
                problems.append("data is not a prefix of the signal")
            tapn, gaps = state.get("tap_bytes_final"), state.get("tap_gaps")
            if tapn is not None and not gaps and len(d2) != tapn:
                problems.append(f"WAV holds {len(d2)} bytes, the tap client received {tapn}")
            if raws and len(d2) != os.path.getsize(raws[0][1]):
                problems.append(f"WAV holds {len(d2)} bytes, the raw file {os.path.getsize(raws[0][1])}")
    ck.check(name, not problems, "; ".join(problems) or
             f"{info2.get('data_len')} bytes, same as the raw file and the tap ({boot.shutdown_detail()})")
    return boot


TIMINGS = {}


# ---- apps: real OSS programs from Debian bookworm --------------------------------------------
#
# The old dsproxy existed because real programs (fragment games, format probing, no SYNC before
# close) played choppy through partial OSS emulations. This boot plays with the host's own
# Debian programs, copied into the guest with their libraries and OSS plugins
# (build-initramfs.sh --host-prog/--host-lib), and compares the host reader's capture with
# what the same program decodes on the host.

LIBDIR = "/usr/lib/x86_64-linux-gnu"
# Debian bookworm's sox (14.4.2+git20190427) has a bug in its OSS writer (src/oss.c,
# osswrite): each pass of its loop takes min(cInput, cOutput) samples -- the whole call's
# count, not what is left -- where cOutput is half of sox's 8192-sample buffer. A call with
# more than 4096 samples that is not a multiple of 4096 runs past its input and ends in a
# SIGSEGV, with any driver (seen with the stock one too). sox hands the writer 8192-sample
# chunks and a shorter last one, so the input's sample count must leave a last chunk of at
# most 4096: 83790 stereo frames (1.9 s) = 167580 samples = 20 * 8192 + 3740.
SOX_FRAMES = 83790
# The MP3 and Ogg inputs. Neither ends on a fragment boundary (the last write is partial, and
# close() must send it: ogg123 never SYNCs): 384000 bytes decoded from the MP3 = 93.75 4-KiB
# fragments, 249600 from the Ogg file = 121.9 of libao's 2-KiB fragments.
MP3_MS, OGG_MS = 2000, 1950
APP_TIMEOUT_S = 30  # per program; a hung one gets its kernel stacks printed, then SIGKILL


class App:
    """One real program, its input and the PCM the host reader must receive from it."""

    def __init__(self, name, rate, argv, prog, plugins, input_name, does, frag=None):
        self.name, self.rate, self.argv, self.prog, self.plugins = name, rate, argv, prog, plugins
        self.input_name, self.does, self.frag = input_name, does, frag
        self.channels, self.fmt = 2, "s16"
        self.expected = None  # bytes, once prepare_apps() ran
        self.input_path = None
        self.expected_how = ""

    def bytes_per_ms(self):
        return self.rate * 4 / 1000


APPS = [
    App("sox", 44100, ["sox", "-q", "/e2e/in.wav", "-t", "oss", "/dev/dsp"], "/usr/bin/sox",
        [f"{LIBDIR}/sox/libsox_fmt_oss.so"], "in.wav",
        "RESET, GETFMTS, SETFMT, STEREO, SPEED, SYNC before writing; 8192-byte writes"),
    # mpg123 picks its synth by CPU (AVX, SSE...), and the synths round differently: the guest
    # (TCG -cpu max) and the host would not decode the same bytes. --cpu x86-64 (SSE, on every
    # x86-64) pins the same decoder on both sides.
    App("mpg123", 48000, ["mpg123", "-q", "--cpu", "x86-64", "-o", "oss", "-a", "/dev/dsp", "/e2e/in.mp3"],
        "/usr/bin/mpg123", [f"{LIBDIR}/mpg123/output_oss.so"], "in.mp3",
        "probes formats with SETFMT/CHANNELS/SPEED, then 4608-byte writes"),
    # libao's OSS plugin asks for 4 fragments of 2 KiB and never SYNCs: close() must drain.
    App("ogg123", 32000, ["ogg123", "-q", "-d", "oss", "-o", "dsp:/dev/dsp", "/e2e/in.ogg"],
        "/usr/bin/ogg123", [f"{LIBDIR}/ao/plugins-4/liboss.so"], "in.ogg",
        "libao: SETFRAGMENT, CHANNELS, SETFMT, SPEED, GETBLKSIZE, 2048-byte writes, no SYNC",
        frag="4 x 2048"),
]
APPS_HOST_TOOLS = ["sox", "lame", "mpg123", "oggenc", "oggdec"]


def prepare_apps():
    """Makes the inputs (build/e2e/apps-inputs/) and the PCM each program must produce, with the
    host's own tools. Returns None or why it could not. Deterministic (lame, oggenc -s), so the
    guest images stay cached between runs."""
    missing = [t for t in APPS_HOST_TOOLS if not shutil.which(t)]
    missing += [p for a in APPS for p in [a.prog] + a.plugins if not os.path.exists(p)]
    if missing:
        return f"not installed on this host: {', '.join(missing)} (run scripts/setup-host.sh)"
    if not Built.progs:
        return Built.why["progs"]
    d = os.path.join(WORK, "apps-inputs")
    os.makedirs(d, exist_ok=True)
    log = os.path.join(d, "prepare.log")

    def tool(argv, stdout=None):
        with open(log, "ab") as lf:
            lf.write(("$ " + " ".join(argv) + "\n").encode())
            lf.flush()
            r = subprocess.run(argv, stdout=stdout or lf, stderr=lf, cwd=d)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}; {log}\n{tail(log)}")
        return r.stdout

    def signal(rate, nbytes):
        return expected_bytes([HOST_PLAY, "--stdout", "-r", str(rate), "-f", "s16", "-c", "2",
                               "--bytes", str(nbytes)])

    open(log, "w").close()
    try:
        sox, mp3, ogg = APPS
        # sox: the WAV's data is what must arrive.
        sox.expected = signal(sox.rate, SOX_FRAMES * 4)
        sox.input_path = os.path.join(d, sox.input_name)
        write_wav(sox.input_path, sox.expected, sox.rate, 2, 16)
        sox.expected_how = f"in.wav's data ({len(sox.expected)} bytes, the dsp-play test signal)"
        # mpg123: an MP3 of the test signal; the host's mpg123 decodes the reference.
        sig = signal(mp3.rate, mp3.rate * 4 * MP3_MS // 1000)
        write_wav(os.path.join(d, "mp3-source.wav"), sig, mp3.rate, 2, 16)
        mp3.input_path = os.path.join(d, mp3.input_name)
        tool(["lame", "--quiet", "-b", "128", "mp3-source.wav", mp3.input_name])
        mp3.expected = tool(["mpg123", "-q", "--cpu", "x86-64", "-s", mp3.input_name],
                            stdout=subprocess.PIPE)
        mp3.expected_how = f"`mpg123 --cpu x86-64 -s in.mp3` on the host ({len(mp3.expected)} bytes)"
        # ogg123: an Ogg Vorbis file (fixed serial number); oggdec decodes the reference with
        # the same libvorbisfile call (ov_read: 16-bit signed little endian).
        sig = signal(ogg.rate, ogg.rate * 4 * OGG_MS // 1000)
        write_wav(os.path.join(d, "ogg-source.wav"), sig, ogg.rate, 2, 16)
        ogg.input_path = os.path.join(d, ogg.input_name)
        tool(["oggenc", "-Q", "-s", "1", "-o", ogg.input_name, "ogg-source.wav"])
        ogg.expected = tool(["oggdec", "-Q", "-R", "-o", "-", ogg.input_name], stdout=subprocess.PIPE)
        ogg.expected_how = f"`oggdec -R in.ogg` on the host ({len(ogg.expected)} bytes)"
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        return f"preparing the inputs failed: {e}"
    for a in APPS:
        if not a.expected:
            return f"{a.name}: the host decoded nothing from {a.input_name}; {log}"
    return None


def apps_image_args():
    args = []
    for a in APPS:
        args += ["--host-prog", a.prog]
        for lib in a.plugins:
            args += ["--host-lib", lib]
        args += ["--file", f"{a.input_path}=/e2e/{a.input_name}"]
    return args


def apps_script():
    """Runs each program in the background under a watchdog: a program that hangs gets its
    threads' kernel stacks printed (where in the driver it waits) and is killed, and the next
    one still runs."""
    lines = ["#!/bin/sh", "# Generated by tests/e2e/e2e.py: real OSS programs, in sequence.",
             "failed=0",
             "alive() { [ -d /proc/$1 ] && ! grep -q '^State:.*Z' /proc/$1/status 2>/dev/null; }",
             "app() {", "\tname=$1; limit=$2; shift 2",
             "\techo \"E2E-STEP-BEGIN: $name\"",
             "\tt0=$(cut -d' ' -f1 /proc/uptime)",
             "\t\"$@\" </dev/null &", "\tpid=$!", "\tticks=0",
             "\twhile alive $pid && [ $ticks -lt $((limit * 10)) ]; do sleep 0.1; ticks=$((ticks + 1)); done",
             "\tif alive $pid; then",
             "\t\techo \"E2E-HUNG: $name still running after $limit s; its threads:\"",
             "\t\tfor task in /proc/$pid/task/*; do",
             "\t\t\techo \"E2E-HUNG:  task ${task##*/} wchan=$(cat $task/wchan) syscall=$(cut -d' ' -f1 $task/syscall)\"",
             "\t\t\tsed 's/^/E2E-HUNG:    /' $task/stack",
             "\t\tdone",
             "\t\tkill -9 $pid",
             "\tfi",
             "\twait $pid", "\trc=$?",
             "\techo \"E2E-STEP-END: $name exit=$rc start=$t0 end=$(cut -d' ' -f1 /proc/uptime)\"",
             "\t[ $rc -eq 0 ] || failed=1", "}"]
    for a in APPS:
        lines.append(f"app {a.name} {APP_TIMEOUT_S} " + " ".join(a.argv))
    lines.append("exit $failed")
    return "\n".join(lines) + "\n"


def run_apps(combo, image, image_err):
    c = COMBOS[combo]
    stock = c["driver"] == "stock"
    names = ["guest runs the programs"]
    for a in APPS:
        names += [f"{a.name}: plays to the end (exit 0)",
                  f"{a.name}: capture bit-exact" + (" (then < 1 period of silence: snd-pcm-oss pads)" if stock else ""),
                  f"{a.name}: -e log shows SPEED/SETFMT/CHANNELS" + ("/SETFRAGMENT" if a.frag and not stock else "")]
    names.append("shutdown: device and reader exit 0 on SIGINT")
    ck = Checks(f"{combo} apps", names)
    why = boot_unavailable(combo, "apps", image_err)
    if why:
        ck.fail_rest(why)
        return None
    boot = Boot(combo, "apps")
    boot.run(image, c["driver"], c["flavor"], "apps", {"wav": ["-x", "-e", "-f", "out.wav"]},
             timeout=60 + APP_TIMEOUT_S * len(APPS))
    if boot.error:
        ck.fail_rest(boot.error)
        return boot
    ran = "DSPROXY-GUEST: run:" in boot.console and boot.guest_rc not in (124, 125, 126)
    ck.check("guest runs the programs", ran,
             f"guest-run exit {boot.guest_rc}; {boot.path('console.log')}" +
             ("" if ran else "\n" + tail(boot.path("console.log"), 25)))
    wav_segs = segments(boot.dir, "wav")
    seg_info = {n: wavfile.parse_wav(p) for n, p in wav_segs}
    seg_desc = "; ".join(f"{os.path.basename(p)}: {seg_info[n].get('rate')}/{seg_info[n].get('bits')}bit/"
                         f"{seg_info[n].get('channels')}ch {seg_info[n].get('data_actual', 0)} bytes"
                         for n, p in wav_segs) or "no out*.wav files"
    eng = boot.reader_log("wav")
    seg_states = english_states_at_recording(eng)
    used_seg = 0
    timings = []
    for a in APPS:
        lines, rc = boot.step_output(a.name)
        hung = [ln.split("E2E-HUNG:", 1)[1].rstrip() for ln in boot.console.splitlines() if "E2E-HUNG:" in ln]
        end = re.search(rf"E2E-STEP-END: {re.escape(a.name)} exit=\d+ start=([\d.]+) end=([\d.]+)", boot.console)
        secs = float(end.group(2)) - float(end.group(1)) if end else None
        detail = f"exit {rc}" + (f" after {secs:.1f} s" if secs is not None else "") + f"; {a.does}"
        if rc != 0:
            detail += ": " + " | ".join(ln.strip() for ln in lines[-6:] if ln.strip())
            if any(a.name in h for h in hung):
                detail += "\n" + "\n".join("    | " + h for h in hung)
        ck.check(f"{a.name}: plays to the end (exit 0)", rc == 0, detail)
        # The reader's WAV: the next segment in this program's format.
        seg = next(((n, p) for n, p in wav_segs if n > used_seg and seg_info[n].get("rate") == a.rate
                    and seg_info[n].get("channels") == 2 and seg_info[n].get("bits") == 16), None)
        # -e: the params the -e log had shown when the reader started that segment (on the stock
        # path snd-pcm-oss applies every format mpg123 probes, so the log holds many more).
        want = {"rate": str(a.rate), "fmt": "AFMT_S16_LE", "channels": "2"}
        state = seg_states.get(os.path.basename(seg[1])) if seg else None
        name = f"{a.name}: capture bit-exact" + (" (then < 1 period of silence: snd-pcm-oss pads)" if stock else "")
        if seg is None:
            ck.check(name, False, f"no segment in {a.rate}/16bit/2ch; segments: {seg_desc}")
        elif seg_info[seg[0]]["problems"]:
            used_seg = seg[0]
            ck.check(name, False, f"{os.path.basename(seg[1])}: " + "; ".join(seg_info[seg[0]]["problems"]))
        else:
            used_seg = seg[0]
            got = wavfile.wav_data(seg[1], seg_info[seg[0]])
            want_pcm = a.expected
            base = os.path.basename(seg[1])
            if not stock:
                diff = wavfile.describe_difference(got, want_pcm, 0, a.bytes_per_ms())
                ck.check(name, diff is None, f"{base}: " + (diff or f"{len(got)} bytes exact = {a.expected_how}"))
            else:
                # snd-pcm-oss fills the last partial period with silence when it drains
                # (snd_pcm_oss_sync; close() too): the program's bytes, then less than one period
                # of silence that ends on a period boundary.
                period = int(state["frag"].split(" x ")[1]) if state and state.get("frag") else None
                pad = got[len(want_pcm):]
                prefix_ok = got[:len(want_pcm)] == want_pcm
                ok = (prefix_ok and period is not None and all(b == 0 for b in pad) and len(pad) < period
                      and len(got) % period == 0)
                if ok:
                    detail = (f"{base}: {len(want_pcm)} bytes exact = {a.expected_how}, then " +
                              (f"{len(pad)} bytes of silence up to the {period}-byte period boundary" if pad
                               else f"nothing (it ends on a {period}-byte period boundary)"))
                elif not prefix_ok or len(got) < len(want_pcm):
                    detail = f"{base}: " + wavfile.describe_difference(got, want_pcm, 0, a.bytes_per_ms())
                else:
                    detail = (f"{base}: {len(want_pcm)} bytes exact, then {len(pad)} bytes "
                              f"({'silence' if all(b == 0 for b in pad) else 'not silence'}); period "
                              f"{period if period else 'unknown (no SETFRAGMENT in the -e log)'}; file "
                              f"{len(got)} bytes")
                ck.check(name, ok, detail)
        name = f"{a.name}: -e log shows SPEED/SETFMT/CHANNELS" + ("/SETFRAGMENT" if a.frag and not stock else "")
        if state is None or any(state.get(k) != v for k, v in want.items()):
            ck.check(name, False, f"want {want}; the -e log said {state or 'nothing'} when the reader "
                     f"started {os.path.basename(seg[1]) if seg else 'the segment (none)'}; "
                     f"{boot.path('reader-wav.log')}")
        else:
            # Our module hands the program's SETFRAGMENT to the device as it is.
            frag_ok = not a.frag or stock or state.get("frag") == a.frag
            ck.check(name, frag_ok, f"{state}" + ("" if frag_ok else f"; the program asked for {a.frag}"))
        if secs is not None:
            timings.append(f"{a.name} {len(a.expected) / a.bytes_per_ms() / 1000:.1f} s of audio in {secs:.1f} s")
    if timings:
        TIMINGS[f"{combo} apps"] = ", ".join(timings)
    ck.check("shutdown: device and reader exit 0 on SIGINT",
             all(v == 0 for v in boot.shutdown.values()), boot.shutdown_detail())
    ck.fail_rest("not evaluated")
    return boot


# ---- ci: verdicts on a real capture -----------------------------------------------------------

CI_PAUSE_S = 0.3  # between the first play's close and the second's open (mpg321-like)
CI_IDLE_AFTER_S = 4  # after the second play, before the third: --once must end in it
CI_DURATION_S = 0.5


def ci_step(driver, name):
    # Whole periods on the stock path: snd-pcm-oss pads a partial last period with silence,
    # which would sit between the two plays in the file.
    return PlayStep(name, driver, 48000, "s16", 2, 1000, frag=0x0004000C)


def ci_script(driver):
    s = ci_step(driver, "ci-play")
    return guest_script([("play1", s.args()), ("pause", ["sleep", str(CI_PAUSE_S)]),
                         ("play2", s.args()), ("idle", ["sleep", str(CI_IDLE_AFTER_S)]),
                         ("play3", s.args())])


def verdict_line(text):
    """The reader's verdict line (MATCH: or MISMATCH:), or None."""
    m = re.findall(r"^dsproxy-host-reader: ((?:MATCH|MISMATCH): .*)$", text, re.M)
    return m[-1] if m else None


def run_ci(combo, image, image_err):
    c = COMBOS[combo]
    names = ["guest plays, reopens, plays again, then a third time",
             "--once ends by itself after the device stayed closed, not at the reopen",
             "--once: both plays in one file, --expect says MATCH (exit 0)",
             "--report, --junit and --plot written and consistent",
             "--expect of a golden with one sample changed: MISMATCH at that sample (exit 3)",
             "--duration 0.5 ends by itself with exactly 0.5 s"]
    ck = Checks(f"{combo} ci", names)
    why = boot_unavailable(combo, "ci", image_err)
    if why:
        ck.fail_rest(why)
        return None
    step = ci_step(c["driver"], "ci-play")
    one = expected_bytes(step.host_args())
    boot = Boot(combo, "ci")
    write_wav(boot.path("golden.wav"), one + one, 48000, 2, 16)
    # The deliberate mismatch: one sample of channel 2, 1.5 s in (in the second play).
    bad_frame = 72000
    bad = bytearray(one + one)
    at = bad_frame * 4 + 2
    orig = struct.unpack_from("<h", bad, at)[0]
    struct.pack_into("<h", bad, at, orig + 1 if orig < 32767 else orig - 1)
    write_wav(boot.path("wrong.wav"), bytes(bad), 48000, 2, 16)
    state = {}

    def during(boot):
        # When did the --once and --duration readers end, relative to the guest's steps?
        t0 = time.monotonic()
        while time.monotonic() - t0 < 200 and boot.qemu and boot.qemu.alive():
            for name in ("once", "dur"):
                r = boot.readers.get(name)
                if r and f"{name}_exit" not in state and not r.alive():
                    state[f"{name}_exit"] = time.monotonic()
            time.sleep(0.05)

    boot.run(image, c["driver"], c["flavor"], "ci",
             {"once": ["-x", "--once", "-f", "once.wav", "--expect", "golden.wav",
                       "--report", "once.json", "--junit", "once.xml", "--plot", "once.png"],
              "mismatch": ["-x", "-f", "mm.wav", "--expect", "wrong.wav"],
              "dur": ["-x", "--duration", str(CI_DURATION_S), "-f", "dur.wav"]},
             timeout=180, during=during)
    if boot.error:
        ck.fail_rest(boot.error)
        return boot
    rcs = {n: boot.readers[n].p.returncode for n in boot.readers}
    steps = {n: boot.step_output(n)[1] for n in ("play1", "play2", "play3")}
    ck.check(names[0], all(v == 0 for v in steps.values()),
             f"exit codes {steps}; guest-run exit {boot.guest_rc}")

    # --once: ended while the guest slept between play2 and play3, at least --idle after
    # play2's RELEASE (the tap client's arrival times and the poll share time.monotonic()).
    rel = [r["t"] for r in (boot.tap.records if boot.tap else []) if r["kind"] == "RELEASE" and r["stream"] == 0]
    prep = [r["t"] for r in (boot.tap.records if boot.tap else []) if r["kind"] == "PREPARE" and r["stream"] == 0]
    t_exit = state.get("once_exit")
    if t_exit is None or len(rel) < 2 or len(prep) < 3:
        ck.check(names[1], False, f"reader exit seen: {t_exit is not None}; RELEASEs {len(rel)}, "
                 f"PREPAREs {len(prep)} on the tap; status {rcs.get('once')}")
    else:
        after = t_exit - rel[1]
        ck.check(names[1], 0.95 <= after and t_exit < prep[2] and rcs.get("once") == 0,
                 f"exited {after:.2f} s after the second play's RELEASE (--idle 1), "
                 f"{prep[2] - t_exit:.2f} s before the third play's PREPARE; the reopen took "
                 f"{prep[1] - rel[0]:.2f} s; status {rcs.get('once')}")
    log = boot.reader_log("once")
    line = verdict_line(log)
    info = wavfile.parse_wav(boot.path("once.wav")) if os.path.exists(boot.path("once.wav")) else None
    got = wavfile.wav_data(boot.path("once.wav"), info) if info and not info["problems"] else b""
    # On the stock path the last period may be padded with silence after the second play.
    exact = got[:len(one) * 2] == one + one and not got[len(one) * 2:].strip(b"\0")
    ck.check(names[2], rcs.get("once") == 0 and exact and line and line.startswith("MATCH: "),
             f"exit {rcs.get('once')}; once.wav {len(got)} bytes, two plays = {2 * len(one)}"
             f"{' exact' if exact else ' NOT exact'}; verdict: {line}")
    problems = []
    try:
        with open(boot.path("once.json")) as f:
            rep = json.load(f)
        st = rep["streams"][0]
        if rep["verdict"] != "match":
            problems.append(f"report verdict {rep['verdict']}")
        if abs(st["duration_s"] - len(got) / 192000) > 1e-6:
            problems.append(f"duration {st['duration_s']} for {len(got)} bytes")
        kinds = [m["kind"] for m in st["marks"]]
        if "closed" not in kinds or "opened" not in kinds:
            problems.append(f"the reopen is not marked (marks: {kinds})")
        if st["stream"] != 0 or st["rate"] != 48000 or st["channels"] != 2:
            problems.append(f"stream {st['stream']} rate {st['rate']} channels {st['channels']}")
    except (OSError, ValueError, KeyError, IndexError) as e:
        problems.append(f"once.json: {e!r}")
    try:
        x = open(boot.path("once.xml")).read()
        if 'failures="0"' not in x or "<testcase " not in x:
            problems.append("once.xml has failures or no test case")
    except OSError as e:
        problems.append(f"once.xml: {e}")
    try:
        with open(boot.path("once.png"), "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                problems.append("once.png is not a PNG")
    except OSError as e:
        problems.append(f"once.png: {e}")
    ck.check(names[3], not problems, "; ".join(problems) or "report: match, marks include the reopen; "
             "JUnit: 0 failures; PNG written")

    line = verdict_line(boot.reader_log("mismatch"))
    want = f"at {bad_frame / 48000:.6f} s (frame {bad_frame}): channel 2"
    ck.check(names[4], rcs.get("mismatch") == 3 and line is not None and line.startswith("MISMATCH: ")
             and want in line, f"exit {rcs.get('mismatch')}; verdict: {line}; want '{want}'")

    info = wavfile.parse_wav(boot.path("dur.wav")) if os.path.exists(boot.path("dur.wav")) else None
    got = wavfile.wav_data(boot.path("dur.wav"), info) if info and not info["problems"] else b""
    n = int(48000 * CI_DURATION_S) * 4
    ck.check(names[5], "dur_exit" in state and rcs.get("dur") == 0 and got == one[:n],
             f"exited by itself: {'yes' if 'dur_exit' in state else 'NO'}; status {rcs.get('dur')}; "
             f"{len(got)} bytes, want the first {n} of the play")
    return boot


# ---- docs: docs/ci.md's job, as written --------------------------------------------------------

def docs_blocks():
    """{name: text} of the blocks docs/ci.md marks for testing: <!-- ci-file: NAME -->,
    <!-- ci-job: NAME -->, <!-- ci-yaml: NAME --> each followed by a fenced block."""
    with open(os.path.join(REPO, "docs", "ci.md")) as f:
        text = f.read()
    return {m.group(2): m.group(3) for m in
            re.finditer(r"<!-- ci-(file|job|yaml): (\S+) -->\n```\w*\n(.*?)```", text, re.S)}


def run_docs():
    names = ["docs/ci.md's job runs as written: exit 0 and all four artifacts",
             "--check of its capture against a golden with one sample changed exits 3",
             "the GitHub Actions and GitLab CI jobs run the script and keep the artifacts"]
    ck = Checks("docs", names)
    d = os.path.join(WORK, "docs")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "ci"))
    try:
        blocks = docs_blocks()
        beep, job = blocks["beep.c"], blocks["ci/sound-test.sh"]
        yaml_gh, yaml_gl = blocks["github"], blocks["gitlab"]
    except (OSError, KeyError) as e:
        ck.fail_rest(f"docs/ci.md does not have its marked blocks: {e!r}")
        return
    with open(os.path.join(d, "beep.c"), "w") as f:
        f.write(beep)
    with open(os.path.join(d, "ci", "sound-test.sh"), "w") as f:
        f.write(job)
    env = dict(os.environ, DSPROXY=REPO)
    log = os.path.join(d, "job.log")
    t0 = time.monotonic()
    rc = run_logged(["bash", "ci/sound-test.sh"], log, env=env, cwd=d, timeout=900)
    arts = ["out.wav", "out.json", "out.xml", "out.png"]
    missing = [a for a in arts if not os.path.exists(os.path.join(d, a))]
    text = open(log, errors="replace").read()
    line = verdict_line(text)
    ck.check(names[0],
             rc == 0 and not missing and line is not None and line.startswith("MATCH: "),
             f"exit {rc}; missing {missing or 'nothing'}; verdict: {line} ({time.monotonic() - t0:.0f} s)"
             + ("" if rc == 0 else f"; {log}\n{tail(log, 20)}"))
    # Re-judge the artifact, as docs/ci.md shows, against a golden with one sample changed.
    name = "--check of its capture against a golden with one sample changed exits 3"
    golden = os.path.join(d, "golden.pcm")
    if not os.path.exists(golden) or not Built.reader:
        ck.check(name, False, "no golden.pcm or no reader")
    else:
        data = bytearray(open(golden, "rb").read())
        frame = 12345
        struct.pack_into("<h", data, frame * 4, struct.unpack_from("<h", data, frame * 4)[0] ^ 1)
        with open(os.path.join(d, "golden-bad.pcm"), "wb") as f:
            f.write(data)
        p = subprocess.run([Built.reader, "--check", "out.wav", "--expect", "golden-bad.pcm",
                            "--raw-format", "S16_LE:48000:2", "--plot", "bad.png"],
                           cwd=d, capture_output=True, text=True)
        line = verdict_line(p.stderr)
        want = f"(frame {frame}): channel 1"
        p2 = subprocess.run([Built.reader, "--check", "out.wav", "--marks-from", "out.json",
                             "--plot", "again.png"], cwd=d, capture_output=True, text=True)
        ck.check(name, p.returncode == 3 and line is not None and want in line
                 and os.path.exists(os.path.join(d, "bad.png")) and p2.returncode == 0,
                 f"exit {p.returncode}: {line}; --marks-from re-plot exit {p2.returncode}")
    problems = []
    for label, y in (("GitHub", yaml_gh), ("GitLab", yaml_gl)):
        if "bash ci/sound-test.sh" not in y:
            problems.append(f"{label} does not run ci/sound-test.sh")
        for pat in ("out*.wav", "out.json", "out.xml", "out*.png"):
            if pat not in y:
                problems.append(f"{label} does not keep {pat}")
    if "junit: out.xml" not in yaml_gl:
        problems.append("GitLab does not read out.xml as its JUnit report")
    ck.check(names[2], not problems,
             "; ".join(problems) or "both run ci/sound-test.sh and keep out*.wav, out.json, out.xml, out*.png")


def run_demo():
    """The README's main command, as a user runs it, in a scratch directory."""
    name = "demo: scripts/demo.sh leaves a bit-exact out.wav and out.png, and ends with the verdict"
    d = os.path.join(WORK, "demo")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    log = os.path.join(d, "demo.log")
    t0 = time.monotonic()
    rc = run_logged(["bash", os.path.join(REPO, "scripts", "demo.sh")], log, cwd=d,
                    timeout=900)
    with open(log, errors="replace") as f:
        text = f.read()
    out = os.path.join(d, "out.wav")
    info = wavfile.parse_wav(out) if os.path.exists(out) else None
    last = [ln for ln in text.splitlines() if ln.strip()][-1:] or [""]
    exact = re.fullmatch(r"demo: verdict: MATCH: .*bit-exact.*", last[0].replace("\x1b[1m", "").replace("\x1b[0m", ""))
    problems = []
    try:
        with open(os.path.join(d, "out.png"), "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                problems.append("out.png is not a PNG")
    except OSError:
        problems.append("no out.png beside out.wav")
    if rc != 0:
        problems.append(f"exit {rc}")
    if info is None:
        problems.append("no out.wav in the current directory")
    elif info["problems"]:
        problems += info["problems"]
    else:
        tune = expected_bytes([HOST_PLAY, "--tune", "--stdout", "-r", "48000", "-f", "s16", "-c", "2"])
        diff = wavfile.describe_difference(wavfile.wav_data(out, info), tune, 0, 192)
        if diff:
            problems.append(diff)
    R.check(name, not problems and exact is not None,
            "; ".join(problems) + f"; {log}\n{tail(log, 20)}" if problems else
            f"{exact.group(0)[6:] if exact else 'the last line is not the MATCH verdict: ' + last[0]} "
            f"({time.monotonic() - t0:.0f} s)")


class EmulatedContext:
    """What tests/e2e/emulated.py uses of this suite (it needs no dsproxy-device)."""

    def __init__(self, wall):
        self.wall, self.timings, self.work, self.repo = wall, TIMINGS, WORK, REPO
        # For the D-Bus boots: dsproxy-host-reader --qmp, run like the tap boots' readers.
        self.reader, self.host_record, self.proc = Built.reader, HOST_RECORD, Proc
        self.write_wav = write_wav
        self.check, self.note, self.tail = R.check, note, tail
        self.run_logged, self.guest_script = run_logged, guest_script

    def checks(self, prefix, names):
        return Checks(prefix, names)

    def unavailable(self, flavor):
        if not Built.kernels.get(flavor):
            return Built.why.get(f"kernel-{flavor}", f"kernel {flavor} not fetched")
        if not Built.progs:
            return Built.why.get("progs", "test programs missing")
        return None

    def reader_unavailable(self):
        return None if Built.reader else Built.why.get("reader", "dsproxy-host-reader missing")

    def build_image(self, cdir, flavor, scripts, name):
        """An image with the boot scripts in /e2e/ (the ac97/hda module sets are in every
        image; guest-run.sh picks the set from the card)."""
        args = [os.path.join(REPO, "images", "build-initramfs.sh"), flavor,
                os.path.join(cdir, f"{name}.cpio.gz")]
        for script, text in scripts.items():
            path = os.path.join(cdir, "guest", f"{script}.sh")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            args += ["--file", f"{path}=/e2e/{script}.sh"]
        log = os.path.join(cdir, f"build-{name}.log")
        rc = run_logged(args, log)
        if rc != 0:
            return None, f"build-initramfs failed: {log}\n{tail(log)}"
        return os.path.join(cdir, f"{name}.cpio.gz"), None

    def expected(self, args):
        return expected_bytes([HOST_PLAY, "--stdout"] + list(args))


def main():
    only = [c for c in os.environ.get("E2E_ONLY", "").split(",") if c]
    for c in only:
        if c not in COMBOS and c not in emulated.COMBOS:
            print(f"e2e: unknown combination {c!r} in E2E_ONLY (known: {', '.join(list(COMBOS) + list(emulated.COMBOS))})", file=sys.stderr)
            return 2
    boots = [b for b in os.environ.get("E2E_BOOTS", "").split(",") if b] or BOOTS + emulated.BOOTS
    for b in boots:
        if b not in BOOTS and b not in emulated.BOOTS:
            print(f"e2e: unknown boot {b!r} in E2E_BOOTS (known: {', '.join(BOOTS + emulated.BOOTS)})", file=sys.stderr)
            return 2
    emu_combos = [c for c in (only or list(emulated.COMBOS)) if c in emulated.COMBOS]
    emu_boots = [b for b in boots if b in emulated.BOOTS]
    if not emu_boots:
        emu_combos = []
    boots = [b for b in boots if b in BOOTS]
    combos = [c for c in (only or list(COMBOS)) if c in COMBOS]
    t0 = time.monotonic()
    os.makedirs(WORK, exist_ok=True)
    # One run at a time: runs share build/e2e/ and the machine's two cores (timing checks).
    lock = open(os.path.join(WORK, ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        note("another end-to-end run holds build/e2e/.lock; waiting for it")
        fcntl.flock(lock, fcntl.LOCK_EX)
    for c in combos + emu_combos:
        shutil.rmtree(os.path.join(WORK, c), ignore_errors=True)
    note(f"combinations: {' '.join(combos + emu_combos)}; boots: {' '.join(boots + emu_boots)}; logs in {WORK}")
    build(combos, [emulated.COMBOS[c]["flavor"] for c in emu_combos])

    wall = {}
    per_combo = [b for b in boots if b not in ONCE_BOOTS]
    legacy.bind(sys.modules[__name__])
    apps_prep_err = None
    if "apps" in per_combo and combos:
        t_prep = time.monotonic()
        apps_prep_err = prepare_apps()
        note(f"apps: inputs {'not ready: ' + apps_prep_err if apps_prep_err else 'ready'} "
             f"({time.monotonic() - t_prep:.1f} s)")
    for combo in combos if per_combo else []:
        drv = COMBOS[combo]["driver"]
        kinds = [k for k in per_combo if k in combo_boots(combo)]
        scripts = {
            "play": guest_script([(s.name, s.args()) for s in play_steps(drv)] + [legacy.mmap_play_step()]
                                 + [("mixer", mixer_args())]),
            "nopacing": guest_script([(nopacing_step(drv).name, nopacing_step(drv).args())]),
            "record": guest_script([("record", ["dsp-record", "-r", str(RECORD_RATE), "-f", "s16", "-c",
                                                str(RECORD_CHANNELS), "--bytes", str(RECORD_BYTES),
                                                "--hex", "32", "--skip-silence"]),
                                    legacy.mmap_record_step()]),
            "ci": ci_script(drv),
            "kill": guest_script([("kill-play", ["dsp-play", "-r", str(KILL_PLAY["rate"]), "-f", "s16",
                                                 "-c", str(KILL_PLAY["channels"]), "--ms",
                                                 str(KILL_PLAY["ms"])])]),
            "qemulines": qemulines_script(),
        }
        image, image_err = None, None
        if any(k not in ("apps", "classic") for k in kinds):
            image, image_err = build_image(combo, scripts)
            if image_err:
                note(f"{combo}: no guest image: {image_err}")
        for kind in kinds:
            if kind == "qemulines" and drv != "stock":
                continue
            tb = time.monotonic()
            fn = {"play": run_play, "nopacing": run_nopacing, "record": run_record, "kill": run_kill,
                  "qemulines": run_qemulines, "ci": run_ci}.get(kind)
            try:
                if kind == "apps":
                    # Its own image: the programs' libraries make it 12 MiB (the others' 2 MiB)
                    # and cost half a second of boot.
                    a_image, a_err = None, apps_prep_err
                    if not a_err:
                        a_image, a_err = build_image(combo, {"apps": apps_script()}, "initramfs-apps",
                                                     apps_image_args())
                        if a_err:
                            note(f"{combo}: no apps image: {a_err}")
                    run_apps(combo, a_image, a_err)
                elif kind == "classic":
                    # Its own image: the 32-bit programs ride along as dsp-play32/dsp-mmap32.
                    c_image, c_err = build_image(combo, {"classic": guest_script(legacy.classic_steps())},
                                                 "initramfs-classic", legacy.classic_image_args())
                    if c_err:
                        note(f"{combo}: no classic image: {c_err}")
                    legacy.run_classic(combo, c_image, c_err)
                else:
                    fn(combo, image, image_err)
            except Exception as e:  # a bug in the suite itself must not hide the other boots
                import traceback
                traceback.print_exc()
                R.check(f"{combo} {kind}: suite error", False, repr(e))
            wall[f"{combo} {kind}"] = time.monotonic() - tb

    if "docs" in boots:
        tb = time.monotonic()
        try:
            run_docs()
        except Exception as e:
            import traceback
            traceback.print_exc()
            R.check("docs: suite error", False, repr(e))
        wall["docs"] = time.monotonic() - tb

    # QEMU's own emulated cards (the stand-in for Windows guests): tests/e2e/emulated.py.
    emulated.run(EmulatedContext(wall), emu_combos, emu_boots)

    if "demo" in boots:
        tb = time.monotonic()
        try:
            run_demo()
        except Exception as e:
            import traceback
            traceback.print_exc()
            R.check("demo: suite error", False, repr(e))
        wall["demo"] = time.monotonic() - tb

    print()
    note("wall time per boot: " + ", ".join(f"{k} {v:.0f} s" for k, v in wall.items()))
    for k, v in TIMINGS.items():
        note(f"timing: {k}: {v}")
    legacy.kernel_table(combos)
    note(f"total wall time {time.monotonic() - t0:.0f} s")
    if R.failures:
        note(f"{R.failed} failure(s):")
        for f in R.failures:
            print("  " + f.splitlines()[0][:300])
    print(f"{R.passed} passed, {R.failed} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Legacy-guest checks of the end-to-end suite (issue 10): OSS mmap, the classic device nodes
and open modes, 32-bit programs, and the per-kernel summary table.

e2e.py calls bind(itself) once; the functions here use its helpers (Checks, Boot, the
results) through that reference, so this file holds only what is about legacy guests.

What is checked:
  play boot, every combination   dsp-mmap plays 2 s through the mapped ring the way Quake does
                                 (mmap before the format, prefill, trigger, paint ahead of
                                 GETOPTR, stop): the capture is the signal bit for bit, then
                                 only silence (what the program painted after it); with our
                                 module also exactly as long as the pointer says the card
                                 took; the program saw no underrun and a pointer consistent
                                 with its byte count; write() after mmap() is refused; the
                                 playback took as long as the audio (+-5 %).
  record boot, every combination dsp-mmap --record follows GETIPTR on the mapped capture ring:
                                 its bytes are a contiguous, frame-aligned piece of the
                                 injected signal (after the card's leading silence).
  classic boot, 6.12-ours        /dev/audio (Sun defaults, mu-law through the card's MU_LAW,
                                 recorded by the reader as a mu-law WAV), /dev/dsp1 (stream
                                 1), the three open modes, SETDUPLEX and full duplex,
                                 GETBLKSIZE/NONBLOCK/POST/GETTRIGGER/GETODELAY agreeing, and
                                 static 32-bit (i386) dsp-play and dsp-mmap on the 64-bit
                                 kernel (compat ioctls, 32-bit mmap).
"""

import os
import re

E = None  # the e2e module


def bind(e2e_module):
    global E
    E = e2e_module


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# ---- mmap playback (play boot) ---------------------------------------------------------------

MMAP_PLAY = {"rate": 22050, "channels": 2, "ms": 2000}
MMAP_TIMING_TOLERANCE = 0.05


def mmap_play_step():
    m = MMAP_PLAY
    return ("mmap", ["dsp-mmap", "-r", str(m["rate"]), "-f", "s16", "-c", str(m["channels"]),
                     "--ms", str(m["ms"]), "--check-rw"])


def mmap_play_names(driver):
    return ["mmap: dsp-mmap plays through the mapped ring (no underrun, pointer consistent)",
            "mmap: write() after mmap() is refused",
            "mmap: WAV holds the signal bit-exact, then only silence"
            + (", as long as the pointer says" if driver == "ours" else ""),
            f"mmap: the mapped playback runs in real time (+-{MMAP_TIMING_TOLERANCE:.0%})"]


def check_mmap_play(ck, boot, combo, driver, wav_segs, seg_info, used_seg):
    """The mmap step of a play boot. wav_segs/seg_info/used_seg: the play analysis' segment
    list and the last segment it used. Returns the segment used."""
    m = MMAP_PLAY
    names = mmap_play_names(driver)
    lines, rc = boot.step_output("mmap")
    underruns = E.kv(lines, "DSP-MMAP: played", "underruns")
    mism = E.kv(lines, "DSP-MMAP: GETOPTR calls", "ptr_mismatches")
    ck.check(names[0], rc == 0 and underruns == "0" and mism == "0",
             f"exit {rc}, underruns {underruns}, pointer mismatches {mism}; "
             + " | ".join(ln.strip() for ln in lines if "DSP-MMAP: GETOPTR" in ln or "played" in ln
                          or "GETCAPS" in ln or "error" in ln or "stalled" in ln)[:400])
    refused = next((ln for ln in lines if "after mmap() refused" in ln), None)
    ck.check(names[1], refused is not None and "ENXIO" in refused,
             (refused or "no refusal line").split("DSP-MMAP: ", 1)[-1].strip())
    signal = E.expected_bytes([E.HOST_PLAY, "--stdout", "-r", str(m["rate"]), "-f", "s16", "-c",
                               str(m["channels"]), "--ms", str(m["ms"])])
    seg = next(((n, p) for n, p in wav_segs if n > used_seg and seg_info[n].get("rate") == m["rate"]
                and seg_info[n].get("channels") == m["channels"] and seg_info[n].get("bits") == 16), None)
    if seg is None:
        ck.check(names[2], False, f"no {m['rate']}/16bit/{m['channels']}ch segment after segment {used_seg}")
        ck.check(names[3], False, "no capture")
        return used_seg
    info = seg_info[seg[0]]
    got = E.wavfile.wav_data(seg[1], info) if not info["problems"] else b""
    pad = got[len(signal):]
    stop_ptr = E.kv(lines, "DSP-MMAP: after the stop", "bytes")
    problems = list(info["problems"])
    if got[:len(signal)] != signal:
        problems.append(E.wavfile.describe_difference(got[:len(signal)], signal, 0, m["rate"] * 4 / 1000)
                        or f"{len(got)} bytes, shorter than the {len(signal)}-byte signal")
    if any(pad):
        problems.append(f"{sum(1 for b in pad if b)} non-zero bytes in the {len(pad)} after the signal")
    if driver == "ours" and (stop_ptr is None or int(stop_ptr) != len(got)):
        problems.append(f"the file holds {len(got)} bytes, GETOPTR said the card took {stop_ptr}")
    ck.check(names[2], not problems, f"{os.path.basename(seg[1])}: " + ("; ".join(problems) if problems else
             f"{len(signal)} bytes exact, then {len(pad)} bytes of the silence the program painted"
             + (f"; = the {stop_ptr} bytes the pointer passed" if driver == "ours" else "")))
    el = E.kv(lines, "DSP-MMAP: elapsed_ms", "elapsed_ms")
    audio_ms = len(got) * 1000 / (m["rate"] * 4)
    if el is None or not got:
        ck.check(names[3], False, f"no elapsed_ms (exit {rc})")
    else:
        ratio = float(el) / audio_ms
        ck.check(names[3], abs(ratio - 1) <= MMAP_TIMING_TOLERANCE,
                 f"{audio_ms:.0f} ms captured, trigger to stop took {float(el):.0f} ms ({ratio:.3f}x)")
        E.TIMINGS[f"{combo} mmap"] = f"{audio_ms:.0f} ms audio -> {float(el):.0f} ms ({ratio:.3f}x)"
    return seg[0]


# ---- mmap recording (record boot) ------------------------------------------------------------

MMAP_RECORD_BYTES = 192000  # 1 s of 48 kHz S16 stereo, after dsp-record's second


def mmap_record_step():
    return ("mmap-record", ["dsp-mmap", "--record", "-r", str(E.RECORD_RATE), "-f", "s16", "-c",
                            str(E.RECORD_CHANNELS), "--bytes", str(MMAP_RECORD_BYTES), "--hex", "32",
                            "--skip-silence", "--check-rw"])


MMAP_RECORD_NAME = "mmap-record: the mapped capture ring holds a contiguous piece of the injected audio, bit-exact"


def check_mmap_record(ck, boot, inject):
    lines, rc = boot.step_output("mmap-record")
    head = E.kv(lines, "DSP-MMAP: head", "head")
    got_bytes = E.kv(lines, "DSP-MMAP: record", "bytes")
    got_hash = E.kv(lines, "DSP-MMAP: record", "fnv1a64")
    overruns = E.kv(lines, "DSP-MMAP: record", "overruns")
    frame = E.RECORD_CHANNELS * 2
    problems = []
    at = -1
    if rc != 0 or not head or got_bytes != str(MMAP_RECORD_BYTES):
        problems.append(f"dsp-mmap --record exit {rc}, {got_bytes} bytes: "
                        + " | ".join(ln.strip() for ln in lines[-5:]))
    else:
        # the reader injects the file once, across dsp-record and this step: this capture
        # starts where the card's injected audio stood when the stream was set up
        at = inject.find(bytes.fromhex(head))
        while at >= 0 and at % frame:
            at = inject.find(bytes.fromhex(head), at + 1)
        if at < 0:
            problems.append(f"its first bytes {head[:32]}… are nowhere in the injected signal")
        elif at + MMAP_RECORD_BYTES > len(inject):
            problems.append(f"starts at offset {at}: the injected file ends before {MMAP_RECORD_BYTES} more bytes")
        else:
            want = f"{fnv1a64(inject[at:at + MMAP_RECORD_BYTES]):016x}"
            if want != got_hash:
                problems.append(f"fnv1a64 {got_hash}, the injected bytes from offset {at} hash {want}")
    if overruns not in (None, "0"):
        problems.append(f"{overruns} overrun(s)")
    ck.check(MMAP_RECORD_NAME, not problems, "; ".join(problems) or
             f"{MMAP_RECORD_BYTES} bytes = the injected signal from byte {at} "
             f"({at / (E.RECORD_RATE * frame):.3f} s) on, fnv1a64={got_hash}")


# ---- classic nodes, open modes, 32-bit programs (classic boot, 6.12-ours) --------------------

CLASSIC_DEVICE_ARGS = ["--outputs", "2", "--inputs", "2"]
AUDIO_BYTES = 8000  # 1 s of 8 kHz mu-law mono
DSP1 = {"rate": 44100, "channels": 2, "ms": 500}
CONSISTENCY = {"rate": 32000, "channels": 2, "bytes": 4 * 4096 + 1000}
DUPLEX = {"rate": 48000, "channels": 2, "bytes": 192000}
PLAY32 = {"rate": 11025, "channels": 2, "ms": 1000}
MMAP32 = {"rate": 16000, "channels": 2, "ms": 1500}
CLASSIC_INJECT_MS = 2500


def classic_steps():
    return [
        ("audio", ["oss-classic", "audio", "--bytes", str(AUDIO_BYTES)]),
        ("dsp1", ["dsp-play", "-d", "/dev/dsp1", "-r", str(DSP1["rate"]), "-f", "s16", "-c",
                  str(DSP1["channels"]), "--ms", str(DSP1["ms"]), "--strict"]),
        ("modes", ["oss-classic", "modes"]),
        ("consistency", ["oss-classic", "consistency", "-r", str(CONSISTENCY["rate"]), "-f", "s16",
                         "-c", str(CONSISTENCY["channels"])]),
        ("duplex", ["oss-classic", "duplex", "-r", str(DUPLEX["rate"]), "-f", "s16", "-c",
                    str(DUPLEX["channels"]), "--bytes", str(DUPLEX["bytes"]), "--hex", "32"]),
        ("play32", ["dsp-play32", "-r", str(PLAY32["rate"]), "-f", "s16", "-c", str(PLAY32["channels"]),
                    "--ms", str(PLAY32["ms"]), "--strict"]),
        ("mmap32", ["dsp-mmap32", "-r", str(MMAP32["rate"]), "-f", "s16", "-c", str(MMAP32["channels"]),
                    "--ms", str(MMAP32["ms"]), "--check-rw"]),
    ]


def classic_image_args():
    g32 = os.path.join(E.BUILD, "progs", "guest32")
    return ["--file", f"{os.path.join(g32, 'dsp-play')}=/bin/dsp-play32",
            "--file", f"{os.path.join(g32, 'dsp-mmap')}=/bin/dsp-mmap32"]


CLASSIC_NAMES = [
    "guest runs the programs",
    "/dev/audio opens with Sun's defaults (8000 Hz, mono, AFMT_MU_LAW)",
    "/dev/audio: the reader records a mu-law WAV (format 7), bit-exact",
    "/dev/dsp1 plays to output stream 1 (out.1.wav), bit-exact",
    "open modes: O_RDONLY, O_WRONLY, O_RDWR, SETDUPLEX, per-direction exclusivity",
    "GETBLKSIZE, NONBLOCK, POST, GETTRIGGER, GETODELAY and GETOPTR agree with one another",
    "consistency: what it wrote is captured bit-exact",
    "full duplex: playback captured bit-exact",
    "full duplex: the recording is the injected signal, bit-exact",
    "32-bit dsp-play on the 64-bit kernel: bit-exact",
    "32-bit dsp-mmap on the 64-bit kernel: bit-exact, no underrun",
    "shutdown: device and reader exit 0 on SIGINT",
]


def run_classic(combo, image, image_err):
    c = E.COMBOS[combo]
    ck = E.Checks(f"{combo} classic", CLASSIC_NAMES)
    why = E.boot_unavailable(combo, "classic", image_err)
    if why:
        ck.fail_rest(why)
        return None
    boot = E.Boot(combo, "classic")
    inject = E.expected_bytes([E.HOST_PLAY, "--stdout", "-r", str(DUPLEX["rate"]), "-f", "s16", "-c",
                               str(DUPLEX["channels"]), "--ms", str(CLASSIC_INJECT_MS)])
    E.write_wav(boot.path("inject.wav"), inject, DUPLEX["rate"], DUPLEX["channels"], 16)
    boot.run(image, c["driver"], c["flavor"], "classic",
             {"wav": ["-x", "-e", "--inject", "inject.wav", "-f", "out.wav"]}, timeout=180,
             device_args=CLASSIC_DEVICE_ARGS)
    if boot.error:
        ck.fail_rest(boot.error)
        return boot
    ran = "DSPROXY-GUEST: run:" in boot.console and boot.guest_rc not in (124, 125, 126)
    ck.check("guest runs the programs", ran, f"guest-run exit {boot.guest_rc}; {boot.path('console.log')}"
             + ("" if ran else "\n" + E.tail(boot.path("console.log"), 25)))
    segs = E.segments(boot.dir, "wav")
    info = {n: E.wavfile.parse_wav(p) for n, p in segs}

    def seg_for(rate, channels, bits, tag=E.wavfile.WAVE_FORMAT_PCM):
        return next(((n, p) for n, p in segs if info[n].get("rate") == rate and info[n].get("channels")
                     == channels and info[n].get("bits") == bits and info[n].get("format_tag") == tag), None)

    def exact(name, seg, want, what):
        if seg is None:
            desc = "; ".join(f"{os.path.basename(p)} {info[n].get('format_tag')}/{info[n].get('rate')}/"
                             f"{info[n].get('channels')}ch" for n, p in segs)
            ck.check(name, False, f"no segment for {what} (segments: {desc or 'none'})")
            return
        i = E.wavfile.parse_wav(seg[1])
        if i["problems"]:
            ck.check(name, False, f"{os.path.basename(seg[1])}: " + "; ".join(i["problems"]))
            return
        got = E.wavfile.wav_data(seg[1], i)
        diff = E.wavfile.describe_difference(got, want, 0, 1)
        ck.check(name, diff is None, f"{os.path.basename(seg[1])}: " + (diff or f"{len(got)} bytes exact"))

    def step_checks(step):
        lines, rc = boot.step_output(step)
        failed = [ln.split("DSP-CLASSIC: check ", 1)[1] for ln in lines if "DSP-CLASSIC: check" in ln
                  and " FAILED" in ln]
        passed = [ln for ln in lines if "DSP-CLASSIC: check" in ln and " ok" in ln]
        return lines, rc, failed, passed

    # /dev/audio
    lines, rc, failed, passed = step_checks("audio")
    ck.check(CLASSIC_NAMES[1], rc == 0 and not failed and passed,
             next((ln.split("DSP-CLASSIC: ", 1)[1] for ln in lines if "defaults" in ln), f"exit {rc}")
             + ("; " + "; ".join(failed) if failed else ""))
    mulaw = seg_for(8000, 1, 8, tag=7)
    want = E.expected_bytes([E.HOST_PLAY, "--stdout", "-r", "8000", "-f", "u8", "-c", "1", "--bytes",
                             str(AUDIO_BYTES)])
    english_mu = "SNDCTL_DSP_SETFMT   => AFMT_MU_LAW" in boot.reader_log("wav")
    if mulaw is not None and not english_mu:
        ck.check(CLASSIC_NAMES[2], False, "the -e log never says SNDCTL_DSP_SETFMT => AFMT_MU_LAW")
    else:
        exact(CLASSIC_NAMES[2], mulaw, want, "8000 Hz mu-law mono (format tag 7)")

    # /dev/dsp1: the reader writes stream 1 to out.1.wav
    d1 = os.path.join(boot.dir, "out.1.wav")
    want = E.expected_bytes([E.HOST_PLAY, "--stdout", "-r", str(DSP1["rate"]), "-f", "s16", "-c",
                             str(DSP1["channels"]), "--ms", str(DSP1["ms"])])
    lines, rc = boot.step_output("dsp1")
    if rc != 0:
        ck.check(CLASSIC_NAMES[3], False, f"dsp-play -d /dev/dsp1 exit {rc}: " + " | ".join(lines[-4:]))
    else:
        exact(CLASSIC_NAMES[3], (1, d1) if os.path.exists(d1) else None, want, "stream 1 (out.1.wav)")

    # open modes
    lines, rc, failed, passed = step_checks("modes")
    ck.check(CLASSIC_NAMES[4], rc == 0 and not failed and len(passed) >= 8,
             f"{len(passed)} checks ok" + ("; FAILED: " + "; ".join(failed) if failed else "")
             + ("" if rc == 0 else f"; exit {rc}"))

    # consistency
    lines, rc, failed, passed = step_checks("consistency")
    ck.check(CLASSIC_NAMES[5], rc == 0 and not failed and len(passed) >= 14,
             f"{len(passed)} checks ok" + ("; FAILED: " + "; ".join(failed) if failed else "")
             + ("" if rc == 0 else f"; exit {rc}: " + " | ".join(lines[-3:])))
    want = E.expected_bytes([E.HOST_PLAY, "--stdout", "-r", str(CONSISTENCY["rate"]), "-f", "s16", "-c",
                             str(CONSISTENCY["channels"]), "--bytes", str(CONSISTENCY["bytes"])])
    exact(CLASSIC_NAMES[6], seg_for(CONSISTENCY["rate"], CONSISTENCY["channels"], 16), want,
          f"{CONSISTENCY['rate']} Hz")

    # duplex
    lines, rc, failed, passed = step_checks("duplex")
    want = E.expected_bytes([E.HOST_PLAY, "--stdout", "-r", str(DUPLEX["rate"]), "-f", "s16", "-c",
                             str(DUPLEX["channels"]), "--bytes", str(DUPLEX["bytes"])])
    if rc != 0 or failed:
        ck.check(CLASSIC_NAMES[7], False, f"exit {rc}; " + "; ".join(failed or lines[-4:]))
    else:
        exact(CLASSIC_NAMES[7], seg_for(DUPLEX["rate"], DUPLEX["channels"], 16), want, f"{DUPLEX['rate']} Hz")
    head = E.kv(lines, "DSP-CLASSIC: duplex head", "head")
    got_hash = E.kv(lines, "DSP-CLASSIC: duplex record", "fnv1a64")
    got_bytes = E.kv(lines, "DSP-CLASSIC: duplex record", "bytes")
    skipped = E.kv(lines, "DSP-CLASSIC: duplex record", "skipped_silence_bytes")
    n = DUPLEX["bytes"]
    want_hash = f"{fnv1a64(inject[:n]):016x}"
    ok = rc == 0 and got_bytes == str(n) and got_hash == want_hash
    ck.check(CLASSIC_NAMES[8], ok, f"read {got_bytes} bytes fnv1a64={got_hash} after {skipped} bytes of "
             f"leading silence; injected prefix fnv1a64={want_hash}"
             + ("" if ok or not head else f"; head {head[:32]}… is at offset {inject.find(bytes.fromhex(head))} of the injected signal"))

    # 32-bit programs
    lines, rc = boot.step_output("play32")
    want = E.expected_bytes([E.HOST_PLAY, "--stdout", "-r", str(PLAY32["rate"]), "-f", "s16", "-c",
                             str(PLAY32["channels"]), "--ms", str(PLAY32["ms"])])
    if rc != 0:
        ck.check(CLASSIC_NAMES[9], False, f"dsp-play32 exit {rc}: " + " | ".join(lines[-4:]))
    else:
        exact(CLASSIC_NAMES[9], seg_for(PLAY32["rate"], PLAY32["channels"], 16), want, f"{PLAY32['rate']} Hz")
    lines, rc = boot.step_output("mmap32")
    want = E.expected_bytes([E.HOST_PLAY, "--stdout", "-r", str(MMAP32["rate"]), "-f", "s16", "-c",
                             str(MMAP32["channels"]), "--ms", str(MMAP32["ms"])])
    seg = seg_for(MMAP32["rate"], MMAP32["channels"], 16)
    if rc != 0 or seg is None or info[seg[0]]["problems"]:
        ck.check(CLASSIC_NAMES[10], False, f"dsp-mmap32 exit {rc}; segment {seg}: "
                 + " | ".join(ln.strip() for ln in lines[-4:]))
    else:
        got = E.wavfile.wav_data(seg[1], info[seg[0]])
        ok = got[:len(want)] == want and not any(got[len(want):])
        ck.check(CLASSIC_NAMES[10], ok, f"{os.path.basename(seg[1])}: " + (
            f"{len(want)} bytes exact, then {len(got) - len(want)} bytes of silence" if ok else
            (E.wavfile.describe_difference(got[:len(want)], want) or "non-silence after the signal")))
    ck.check("shutdown: device and reader exit 0 on SIGINT",
             all(v == 0 for v in boot.shutdown.values()), boot.shutdown_detail())
    ck.fail_rest("not evaluated")
    return boot


# ---- the per-kernel table --------------------------------------------------------------------

def kernel_table(combos):
    """Prints one row per combination that ran: module build warnings, bit-exact, timing,
    mixer and mmap verdicts gathered from the PASS/FAIL lines."""
    lines = list(E.R.lines)
    rows = []
    for combo in combos:
        c = E.COMBOS[combo]
        mine = [ln for ln in lines if ln.split(" ", 1)[1].startswith(combo + " ")]
        if not mine:
            continue

        def verdict(pred):
            sel = [ln for ln in mine if pred(ln)]
            if not sel:
                return "-"
            bad = sum(1 for ln in sel if ln.startswith("FAIL"))
            return f"ok ({len(sel)})" if not bad else f"FAIL {bad}/{len(sel)}"

        if c["driver"] == "ours":
            wpath = os.path.join(E.BUILD, "guest-driver", c["flavor"], "warnings")
            try:
                with open(wpath) as f:
                    build = f"{f.read().strip()} warnings"
            except OSError:
                build = "not built"
        else:
            build = "stock modules"
        rows.append((combo, build,
                     verdict(lambda ln: "bit-exact" in ln),
                     verdict(lambda ln: "takes 5 s" in ln or "takes <" in ln or "runs in real time" in ln),
                     verdict(lambda ln: re.match(r"^(PASS|FAIL) \S+ play mixer:", ln) is not None),
                     verdict(lambda ln: re.match(r"^(PASS|FAIL) \S+ \S+ (mmap|mmap-record|32-bit dsp-mmap)", ln)
                             is not None)))
    if not rows:
        return
    head = ("combination", "module build", "exact", "timing", "mixer", "mmap")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    E.note("per-kernel summary (checks passed per column):")
    for r in [head] + rows:
        print("  " + "  ".join(str(v).ljust(w) for v, w in zip(r, widths)), flush=True)

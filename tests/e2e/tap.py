#!/usr/bin/env python3
"""A minimal client of dsproxy-device's tap (docs/wire-format.md), for the end-to-end tests.

The tests use it as a third reader next to dsproxy-host-reader: it watches the record stream
(PARAMS, CONTROL, STOP, ... and a count of the PCM bytes) independently of the reader under
test, tells the mixer check when the guest has written its volume and the kill test when enough
audio has gone by. It subscribes in LIVE mode so it never holds the card back. (Changing a
control from the host is dsproxy-host-reader's job: `dsproxy-host-reader -x --mixer vol=70`.)

As a command line tool:
    tap.py SOCKET info                    the card's streams and controls (from HELLO)
    tap.py SOCKET watch [SECONDS]         print records as they arrive (PCM summarized)
"""

import socket
import struct
import sys
import threading
import time

(HELLO, PARAMS, PREPARE, START, STOP, RELEASE, PCM, CONTROL, XRUN, GAP, SNAPSHOT_END, FRONTEND,
 NOTICE) = range(1, 14)
SUBSCRIBE = 0x0101
KIND_NAMES = {
    HELLO: "HELLO", PARAMS: "PARAMS", PREPARE: "PREPARE", START: "START", STOP: "STOP",
    RELEASE: "RELEASE", PCM: "PCM", CONTROL: "CONTROL", XRUN: "XRUN", GAP: "GAP",
    SNAPSHOT_END: "SNAPSHOT_END", FRONTEND: "FRONTEND", NOTICE: "NOTICE",
}
NOTICE_LEVELS = {0: "info", 1: "warning", 2: "error"}
SUB_LIVE = 1 << 0
SUB_NO_PACING = 1 << 1
MAX_PAYLOAD = 1 << 20
ORIGINS = {0: "initial", 1: "guest", 2: "reader"}


class TapError(Exception):
    pass


class _Cursor:
    def __init__(self, buf, what):
        self.buf, self.pos, self.what = buf, 0, what

    def take(self, n):
        if self.pos + n > len(self.buf):
            raise TapError(f"{self.what}: payload too short")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack("<H", self.take(2))[0]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def i32(self):
        return struct.unpack("<i", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def i64(self):
        return struct.unpack("<q", self.take(8))[0]

    def string(self):
        return self.take(self.u8()).decode("utf-8", "replace")

    def rest(self):
        b = self.buf[self.pos:]
        self.pos = len(self.buf)
        return b


def parse_hello(payload):
    c = _Cursor(payload, "HELLO")
    if c.take(4) != b"DSPX":
        raise TapError("not a dsproxy tap (bad magic)")
    version = c.u16()
    c.u16()
    hello = {"version": version, "time_ns": c.u64(), "name": c.string(), "jacks": c.u32(),
             "chmaps": c.u32(), "streams": [], "controls": []}
    for _ in range(c.u32()):
        sid, direction, cmin, cmax, _pad = c.u32(), c.u8(), c.u8(), c.u8(), c.u8()
        hello["streams"].append({"id": sid, "direction": "out" if direction == 0 else "in",
                                 "channels_min": cmin, "channels_max": cmax,
                                 "formats": c.u64(), "rates": c.u64()})
    for _ in range(c.u32()):
        ctl = {"id": c.u32(), "index": c.u32(), "role": c.u32(), "type": c.u32(),
               "count": c.u32(), "min": c.i64(), "max": c.i64(), "step": c.i64(),
               "db_min": c.i32(), "db_step": c.i32()}
        ctl["name"] = c.string()
        hello["controls"].append(ctl)
    return hello


def parse_record(kind, payload):
    """Returns a dict with 'kind' (name) and the record's fields (PCM: 'bytes', not the data)."""
    name = KIND_NAMES.get(kind)
    if name is None:
        raise TapError(f"unknown record kind 0x{kind:04x}")
    c = _Cursor(payload, name)
    r = {"kind": name}
    if kind == HELLO:
        r.update(parse_hello(payload))
    elif kind == PARAMS:
        r.update(stream=c.u32(), buffer_bytes=c.u32(), period_bytes=c.u32(), features=c.u32(),
                 channels=c.u8(), format=c.u8(), rate=c.u8())
    elif kind in (PREPARE, START, RELEASE):
        r.update(stream=c.u32(), time_ns=c.u64())
    elif kind == STOP:
        r.update(stream=c.u32(), time_ns=c.u64(), discarded_bytes=c.u64(), drained=c.u8())
    elif kind == PCM:
        r.update(stream=c.u32(), offset=c.u64(), time_ns=c.u64())
        r["bytes"] = len(c.rest())
    elif kind == CONTROL:
        r.update(id=c.u32(), origin=ORIGINS.get(c.u8(), "?"))
        r["values"] = [c.i64() for _ in range(c.u32())]
    elif kind == XRUN:
        r.update(stream=c.u32(), time_ns=c.u64(), duration_ns=c.u64())
    elif kind == GAP:
        r.update(stream=c.u32(), offset=c.u64(), bytes=c.u64(), time_ns=c.u64())
    elif kind == FRONTEND:
        r.update(connected=c.u8(), time_ns=c.u64())
    elif kind == NOTICE:
        r.update(time_ns=c.u64(), level=NOTICE_LEVELS.get(c.u8(), "?"))
        r["text"] = c.take(c.u16()).decode("utf-8", "replace")
    return r


def frame(kind, payload):
    return struct.pack("<HHI", kind, 0, len(payload)) + payload


class TapClient:
    """One LIVE subscription; a thread collects the records.

    records: every non-PCM record as a dict with 't' (time.monotonic() on arrival).
    pcm_bytes[stream], gaps[stream]: PCM bytes received and GAP bytes reported per stream.
    """

    def __init__(self, path, flags=SUB_LIVE, streams=0, connect_timeout=10.0, log=None):
        self.path = path
        self.log = log
        self.lock = threading.Condition()
        self.records = []
        self.pcm_bytes = {}
        self.gaps = {}
        self.closed = False
        self.error = None
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError as e:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise TapError(f"cannot connect to tap {path}: {e}") from e
                time.sleep(0.1)
        self.sock.settimeout(connect_timeout)
        kind, payload = self._read_frame()
        if kind != HELLO:
            raise TapError(f"first record is {KIND_NAMES.get(kind, kind)}, not HELLO")
        self.hello = parse_hello(payload)
        self._log(f"HELLO {self.hello}")
        self.sock.settimeout(None)
        self.sock.sendall(frame(SUBSCRIBE, struct.pack("<IQ", flags, streams)))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _log(self, line):
        if self.log:
            self.log.write(f"{time.monotonic():.3f} {line}\n")
            self.log.flush()

    def _read_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def _read_frame(self):
        kind, _flags, length = struct.unpack("<HHI", self._read_exact(8))
        if length > MAX_PAYLOAD:
            raise TapError(f"frame of {length} bytes exceeds the limit")
        return kind, self._read_exact(length)

    def _run(self):
        try:
            while True:
                kind, payload = self._read_frame()
                r = parse_record(kind, payload)
                r["t"] = time.monotonic()
                with self.lock:
                    if kind == PCM:
                        self.pcm_bytes[r["stream"]] = self.pcm_bytes.get(r["stream"], 0) + r["bytes"]
                    else:
                        if kind == GAP:
                            self.gaps[r["stream"]] = self.gaps.get(r["stream"], 0) + r["bytes"]
                        self.records.append(r)
                        self._log(" ".join(f"{k}={v}" for k, v in r.items() if k != "t"))
                    self.lock.notify_all()
        except EOFError:
            self._log("tap closed by the device")
        except (OSError, TapError) as e:
            if not self.closed:
                self.error = str(e)
                self._log(f"tap error: {e}")
        finally:
            with self.lock:
                self.closed = True
                self.lock.notify_all()

    def wait_for(self, predicate, timeout):
        """Waits until predicate(self) is true (called under the lock); returns its value."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                v = predicate(self)
                if v or self.closed:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    return v
                self.lock.wait(min(left, 0.2))

    def control(self, name):
        """The control called name (exact), or None."""
        for c in self.hello["controls"]:
            if c["name"] == name:
                return c
        return None

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


def _main(argv):
    if len(argv) < 3 or argv[2] not in ("info", "watch"):
        print(__doc__.strip().split("\n\n")[-1], file=sys.stderr)
        return 2
    path, cmd = argv[1], argv[2]
    tap = TapClient(path, log=sys.stdout if cmd == "watch" else None)
    try:
        if cmd == "info":
            h = tap.hello
            print(f"card {h['name']!r} protocol {h['version']} jacks {h['jacks']} chmaps {h['chmaps']}")
            for s in h["streams"]:
                print(f"stream {s['id']} {s['direction']} channels {s['channels_min']}..{s['channels_max']} "
                      f"formats 0x{s['formats']:x} rates 0x{s['rates']:x}")
            for c in h["controls"]:
                print(f"control #{c['id']} {c['name']!r} index {c['index']} role {c['role']} type {c['type']} "
                      f"count {c['count']} range {c['min']}..{c['max']} step {c['step']}")
        else:
            secs = float(argv[3]) if len(argv) > 3 else 1e9
            tap.wait_for(lambda t: False, secs)
    finally:
        tap.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))

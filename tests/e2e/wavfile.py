"""WAV parsing and byte comparison for the end-to-end tests.

Strict on purpose: the tests want to know that the reader wrote a header whose sizes match the
data it holds (a file that survives a VM kill must be finalized), not merely something a lenient
player would open.
"""

import struct

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_IEEE_FLOAT = 3
WAVE_FORMAT_ALAW = 6
WAVE_FORMAT_MULAW = 7
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# what the reader writes: PCM, and the card's float and G.711 formats as themselves (a test
# that expects PCM checks format_tag itself)
WAVE_FORMATS_EXPECTED = (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT, WAVE_FORMAT_ALAW, WAVE_FORMAT_MULAW)


def parse_wav(path):
    """Returns a dict: channels, rate, bits, format_tag, block_align, byte_rate, data_offset,
    data_len (from the header), file_size, riff_size, problems (list of strings; empty if the
    header is valid and consistent with the file's size)."""
    with open(path, "rb") as f:
        blob = f.read()
    info = {"file_size": len(blob), "problems": []}
    p = info["problems"]
    if len(blob) < 12:
        p.append(f"only {len(blob)} bytes: no RIFF header")
        return info
    riff, riff_size, wave = struct.unpack("<4sI4s", blob[:12])
    info["riff_size"] = riff_size
    if riff not in (b"RIFF", b"RF64") or wave != b"WAVE":
        p.append(f"not a RIFF/WAVE file (starts {blob[:12]!r})")
        return info
    rf64_data_len = None
    pos = 12
    while pos + 8 <= len(blob):
        cid, csize = struct.unpack("<4sI", blob[pos:pos + 8])
        body = pos + 8
        if cid == b"ds64" and riff == b"RF64":
            riff64, data64 = struct.unpack("<QQ", blob[body:body + 16])
            info["riff_size"] = riff64
            rf64_data_len = data64
        elif cid == b"fmt ":
            tag, ch, rate, brate, balign, bits = struct.unpack("<HHIIHH", blob[body:body + 16])
            if tag == WAVE_FORMAT_EXTENSIBLE and csize >= 40:
                tag = struct.unpack("<H", blob[body + 24:body + 26])[0]
            info.update(format_tag=tag, channels=ch, rate=rate, byte_rate=brate,
                        block_align=balign, bits=bits)
        elif cid == b"data":
            info["data_offset"] = body
            info["data_len"] = rf64_data_len if (csize == 0xFFFFFFFF and rf64_data_len is not None) else csize
            break
        pos = body + csize + (csize & 1)
    if "format_tag" not in info:
        p.append("no fmt chunk before the data")
    if "data_offset" not in info:
        p.append("no data chunk")
        return info
    actual = len(blob) - info["data_offset"]
    info["data_actual"] = actual
    if info["data_len"] != actual:
        p.append(f"data chunk says {info['data_len']} bytes, the file holds {actual} after the header")
    want_riff = len(blob) - 8
    if info["riff_size"] != want_riff:
        p.append(f"RIFF size says {info['riff_size']}, file size - 8 is {want_riff}")
    if "format_tag" in info:
        if info["format_tag"] not in WAVE_FORMATS_EXPECTED:
            p.append(f"format tag {info['format_tag']} is not PCM, IEEE float, A-law or mu-law")
        frame = info["channels"] * info["bits"] // 8
        if info["block_align"] != frame:
            p.append(f"block_align {info['block_align']} != channels*bits/8 = {frame}")
        if info["byte_rate"] != info["rate"] * frame:
            p.append(f"byte_rate {info['byte_rate']} != rate*block_align = {info['rate'] * frame}")
        if frame and actual % frame:
            p.append(f"{actual} data bytes is not a whole number of {frame}-byte frames")
    return info


def wav_data(path, info=None):
    info = info or parse_wav(path)
    with open(path, "rb") as f:
        f.seek(info["data_offset"])
        return f.read()


def describe_difference(got, want, silence_byte=0, bytes_per_ms=None):
    """One line saying how got differs from want (None if equal)."""
    if got == want:
        return None

    def ms(n):
        return f" ({n / bytes_per_ms:.1f} ms)" if bytes_per_ms else ""

    common = min(len(got), len(want))
    first = next((i for i in range(common) if got[i] != want[i]), None)
    if first is None:
        if len(got) > len(want):
            extra = got[len(want):]
            kind = "silence" if all(b == silence_byte for b in extra) else "non-silent bytes"
            return (f"{len(extra)} bytes{ms(len(extra))} added at the end ({kind}); "
                    f"the first {len(want)} bytes are exact")
        return (f"{len(want) - len(got)} bytes{ms(len(want) - len(got))} missing at the end; "
                f"got {len(got)} of {len(want)}, all exact")
    # Where does the file's data continue in the signal? (a drop or a duplicate shows as a shift)
    probe = got[first:first + 64]
    shift = ""
    if len(probe) >= 16:
        at = want.find(probe)
        if at >= 0:
            shift = f"; from there it continues at signal byte {at} (shift {at - first:+d})"
        elif all(b == silence_byte for b in probe):
            shift = "; silence there"
    return (f"differs from byte {first}{ms(first)} (got {len(got)} bytes, want {len(want)}): "
            f"got {got[first:first + 8].hex()} want {want[first:first + 8].hex()}{shift}")

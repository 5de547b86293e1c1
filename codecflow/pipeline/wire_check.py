"""Every received message header checked field by field before a stage touches it.

A header that lacks a field, holds one of the wrong type or out of range, or does not fit its
buffers raises `ProtocolError` naming the kind, the field, what it must be and what it is; the
receiving stage logs it and drops the message (`protocol.unpack_header`, `unit_from_msg`,
`coded_from_msg`). Nothing from the wire reaches a KeyError, TypeError or an unbounded
allocation. Fields a stage does not read are not checked (they are never used).
Spec: docs/protocol.md, "Validation".
"""

from __future__ import annotations

from codecflow.data import (PIX_FMTS, PSNR_KEYS, STREAM_FIELD_CHECKS, STREAM_KEYS, UNIT_KINDS,
                            is_int)

MAX_SEQ = 2 ** 53        # sequence numbers, frame and unit indexes
MAX_NAME = 4096          # stream and worker names, messages (characters)
MAX_ITEMS = 65536        # acknowledgement lists, records, frames per message
MAX_SIDE = 65535


class ProtocolError(Exception):
    pass


def _int(lo: int, hi: int):
    return (f"an integer {lo}..{hi}",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi)


def _num():
    return ("a finite number", lambda v: isinstance(v, (int, float))
            and not isinstance(v, bool) and -1e300 < v < 1e300)


def _str(limit: int = MAX_NAME):
    return (f"a string of at most {limit} characters",
            lambda v: isinstance(v, str) and len(v) <= limit)


def _stream_name():
    """A stream name becomes file names in the output folder: no path separators, no NUL,
    not "." or ".."."""
    return (f"a file-name-safe string of 1..{MAX_NAME} characters",
            lambda v: isinstance(v, str) and 0 < len(v) <= MAX_NAME and v not in (".", "..")
            and not any(c in v for c in "/\\\0"))


def _bool():
    return ("true or false", lambda v: isinstance(v, bool))


def _map():
    return ("a map", lambda v: isinstance(v, dict))


def _maybe(check):
    what, ok = check
    return (f"{what} or null", lambda v: v is None or ok(v))


def _info_ok(v) -> bool:
    if not isinstance(v, dict) or set(v) != set(STREAM_KEYS):
        return False
    for key in STREAM_KEYS:
        try:
            if not STREAM_FIELD_CHECKS[key][1](v[key]):
                return False
        except TypeError:
            return False
    return (v["unit_kind"] == "pair") == (v["views"] == 2)


def _codec_ok(v) -> bool:
    """The codec's .cfl header fields (`Codec.header()`)."""
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        return False
    return (isinstance(v.get("codec"), str) and v["codec"] != ""
            and isinstance(v.get("codec_version"), str) and isinstance(v.get("weights"), str)
            and is_int(v.get("q")) and 0 <= v["q"] <= 63)


def _frames_ok(v) -> bool:
    """Frame descriptions: [{fmt, shapes: [[h, w] or [h, w, 3], ...]}, ...]."""
    if not isinstance(v, list) or len(v) > MAX_ITEMS:
        return False
    for m in v:
        if not isinstance(m, dict) or m.get("fmt") not in PIX_FMTS:
            return False
        shapes = m.get("shapes")
        if not isinstance(shapes, list) or len(shapes) != (3 if m["fmt"] == "yuv420p" else 1):
            return False
        for s in shapes:
            if not isinstance(s, list) or len(s) not in (2, 3) or not all(
                    isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_SIDE
                    for d in s):
                return False
            if len(s) == 3 and s[2] != 3:
                return False
    return True


def _records_ok(v) -> bool:
    if not isinstance(v, list) or not 0 < len(v) <= MAX_ITEMS:
        return False
    checks = {"frame_index": _int(0, MAX_SEQ), "flags": _int(0, 255),
              "recon_crc": _int(0, 2 ** 32 - 1), "view": _int(0, 1), "layer": _int(0, 255)}
    return all(isinstance(r, dict) and all(k in r and ok(r[k]) for k, (_, ok) in checks.items())
               for r in v)


def _metrics_ok(v) -> bool:
    """Per-picture quality rows: each holds every PSNR key, all values numbers."""
    num = _num()[1]
    return isinstance(v, list) and len(v) <= MAX_ITEMS and all(
        isinstance(r, dict) and all(k in r for k in PSNR_KEYS)
        and all(isinstance(k, str) and num(x) for k, x in r.items()) for r in v)


def _counts_ok(v) -> bool:
    ok = _int(0, MAX_SEQ)[1]
    return isinstance(v, dict) and len(v) <= MAX_ITEMS and all(
        isinstance(k, str) and len(k) <= MAX_NAME and ok(n) for k, n in v.items())


def _seqs_ok(v) -> bool:
    ok = _int(0, MAX_SEQ)[1]
    return isinstance(v, list) and len(v) <= MAX_ITEMS and all(ok(s) for s in v)


SEQ = _int(0, MAX_SEQ)
INDEX = _int(0, MAX_SEQ)
INFO = ("a stream description (" + ", ".join(STREAM_KEYS) + ", each valid)", _info_ok)
FRAMES = ("a list of frame descriptions {fmt, shapes}", _frames_ok)
UNIT_KIND = (" or ".join(UNIT_KINDS), lambda v: v in UNIT_KINDS)
COUNT = _int(0, MAX_SEQ)

# kind -> ({required field: check}, {optional field: check})
FIELDS = {
    "unit": ({"unit": UNIT_KIND, "seq": SEQ, "stream": _stream_name(), "info": INFO,
              "frames": FRAMES},
             {"pts": _num(), "first_frame": INDEX, "index": INDEX, "meta": _map(),
              "t_read": _num()}),
    "coded": ({"unit": UNIT_KIND, "seq": SEQ, "stream": _stream_name(), "info": INFO,
               "records": ("a non-empty list of records {frame_index, flags, recon_crc, view, "
                           "layer}", _records_ok),
               "codec": ("the codec's header fields (codec, codec_version, weights, q)",
                         _codec_ok)},
              {"first_frame": INDEX, "index": INDEX, "meta": _map(), "recon": _maybe(FRAMES),
               "metrics": ("a list of maps of numbers with every PSNR key", _metrics_ok),
               "encode_s": _num(), "worker": _str(), "t_read": _num(), "frames_n": COUNT}),
    "stream": ({"seq": SEQ, "stream": _stream_name(), "info": INFO},
               {"total": _maybe(COUNT), "meta": _maybe(_map())}),
    "eos": ({"seq": SEQ}, {"final": _bool(), "stream": _stream_name(), "frames": COUNT,
                           "error": _maybe(_str())}),
    "stats": ({}, {"stage": _str(), "queue": COUNT, "inflight": COUNT, "workers": COUNT,
                   "dropped_units": COUNT, "dropped_frames": COUNT, "frames_read": COUNT,
                   "resent": COUNT,
                   "dropped_by_stream": ("a map of stream name -> frames", _counts_ok)}),
    "ready": ({"worker": _str(), "credit": _int(1, MAX_ITEMS)}, {"done": SEQ}),
    "heartbeat": ({"worker": _str()}, {"idle": _bool(), "coding": SEQ, "coding_s": _num()}),
    "ack": ({"seqs": ("a list of sequence numbers", _seqs_ok)}, {"final": _bool()}),
    "error": ({"worker": _str(), "seq": _int(-1, MAX_SEQ), "message": _str()}, {}),
    "stop": ({}, {}),
}


def check_fields(h: dict) -> dict:
    """A decoded header of a known kind -> itself, or ProtocolError naming the bad field."""
    kind = h["kind"]
    required, optional = FIELDS[kind]
    if kind == "eos" and not h.get("final") and "stream" not in h:
        raise ProtocolError("eos message: a stream's end must name its 'stream'; dropped")
    for key, (what, ok) in required.items():
        if key not in h:
            raise ProtocolError(f"{kind} message lacks {key!r} (must be {what}); dropped")
    for fields in (required, optional):
        for key, (what, ok) in fields.items():
            if key not in h:
                continue
            try:
                good = ok(h[key])
            except (TypeError, ValueError):
                good = False
            if not good:
                raise ProtocolError(f"{kind} message field {key!r} must be {what}, got "
                                    f"{h[key]!r:.80}; dropped")
    return h


def check_frames_fit(meta: list, info: dict, kind: str) -> None:
    """Frames must be the stream's size and format, as many as its unit kind holds."""
    w, hgt = info["width"], info["height"]
    cw, ch = (w + 1) // 2, (hgt + 1) // 2
    for i, m in enumerate(meta):
        want = ([[hgt, w], [ch, cw], [ch, cw]] if m["fmt"] == "yuv420p" else [[hgt, w, 3]])
        if m["fmt"] != info["pix_fmt"] or m["shapes"] != want:
            raise ProtocolError(f"{kind} message frame {i}: {m['fmt']} {m['shapes']} does not "
                                f"fit the stream ({info['pix_fmt']} {w}x{hgt}); dropped")


class Rejections:
    """Counts the messages a stage dropped; logs the first few in full, then only counts (a
    flood of bad messages must not flood the log)."""

    LOGGED = 10

    def __init__(self, log, stage: str):
        self.log, self.stage, self.count = log, stage, 0

    def __call__(self, why) -> None:
        self.count += 1
        if self.count <= self.LOGGED:
            self.log.error("%s: %s", self.stage, why)
        if self.count == self.LOGGED:
            self.log.error("%s: further rejected messages are counted, not logged", self.stage)

"""learned-stereo: a joint stereo codec that codes the second view given the first.

The first view (left by default) is coded as learned-intra codes it below q 48 (rate point q,
never oversampled, at every q): its record is a learned-intra payload. The first view's decoded picture is moved by a block disparity field the
encoder searches and signals (`warp.py`); learned-intra's analysis of it (exact) is the
condition, and the second view's latent is coded by the conditional latent coder
(`conditional.py`) given it; its picture comes from learned-intra's synthesis. The entropy model
of the second view thus uses the other view (the idea of CAMSIC).

Second-view payload (see docs/bitstream.md, "learned-stereo payload"):

    offset size  field
    0      1     magic 0x53 ('S')
    1      1     payload version (1)
    2      1     q (0..63)
    3      1     flags: 0x01 grey picture, 0x02 photometric compensation of the reference
    4      1     the view it is coded against (0 = left, 1 = right)
    5      2     original height (u16)
    7      2     original width  (u16)
    9      4 x 4 lengths of: disparity field (after 12 bytes of photometric compensation with
                 flag 0x02), z string, r-anchor string, r-non-anchor string
    25     4     CRC-32 of the quantised latents the encoder coded
    29     4     CRC-32 of bytes 0..28 and the strings
    33     ...   the strings

Decoding is exact, like learned-intra: the same pictures on every machine.
"""

from __future__ import annotations

import struct

import numpy as np

from codecflow.codecs import colour
from codecflow.codecs.base import Codec
from codecflow.codecs.learned import payload as layout
from codecflow.codecs.learned.conditioned import (
    C_FRAC, analyse, code_latent, condition_latent, decode_latent, load_conditional_coder)
from codecflow.codecs.learned.intra import (
    FLAG_GREY, decode_rgb_latent, encode_rgb_latent, is_grey, resolve_device)
from codecflow.codecs.registry import CodecSpec, register
from codecflow.data import FLAG_INTRA, FLAG_VIEW_RIGHT, CodedUnit, Record, StreamInfo, Unit
from codecflow.errors import CodecError

MAGIC = 0x53
INTRA_MAGIC = 0x4C
PAYLOAD_VERSION = 1
_HEAD = struct.Struct("<BBBBBHH")  # format byte, version, q, flags, reference view, h, w
N_STRINGS = 4  # disparity field, z, r anchors, r non-anchors
BLOCK = 16           # disparity blocks of 16 x 16 pixels (the encoder's choice; signalled)
# the codings the encoder tries (the smallest payload is kept): (photometric compensation of
# the reference, field rate weight x warp.disparity_rate(q)); `fast` tries the first only
CANDIDATES = ((False, 1.0), (True, 1.0), (False, 4.0))
FLAG_PHOTOMETRIC = 0x02  # the reference is compensated for gain and offset (12 bytes)
_PHOTO = struct.Struct("<3H3h")  # gain per channel (units of 2^-10), offset (units of 2^-4)
GAIN_ONE, OFFSET_ONE = 1 << 10, 1 << 4
MAX_DISPARITY = 256  # the encoder's search range, pixels
MARGIN = 16          # ... and the other way
VIEWS = ("left", "right")


def pack_payload(q: int, flags: int, ref_view: int, h: int, w: int, strings: list,
                 symbols_crc: int) -> bytes:
    return layout.pack(_HEAD.pack(MAGIC, PAYLOAD_VERSION, q, flags, ref_view, h, w), strings,
                       symbols_crc)


def unpack_payload(data: bytes) -> tuple:
    """-> (q, flags, reference view, h, w, [strings], symbols CRC); CodecError if malformed."""
    data = bytes(data)
    what = "learned-stereo"
    _, _, q, flags, ref, h, w = layout.read_head(data, _HEAD, N_STRINGS, MAGIC,
                                                 PAYLOAD_VERSION, what)
    if q > 63 or h == 0 or w == 0 or flags & ~(FLAG_GREY | FLAG_PHOTOMETRIC) or ref > 1:
        raise CodecError(f"{what} payload header invalid: q={q}, size {w}x{h}, flags "
                         f"0x{flags:02x}, reference view {ref}")
    strings, sym = layout.unpack(data, _HEAD.size, N_STRINGS, True, what)
    return q, flags, ref, h, w, strings, sym


# ------------------------------------------------------------------------- the coding steps
def disparity_range(ref_view: int) -> tuple:
    """Search range of d (target(x) ~ reference(x + d)): mostly positive when the left view
    is the reference, mostly negative when the right view is."""
    return (-MARGIN, MAX_DISPARITY) if ref_view == 0 else (-MAX_DISPARITY, MARGIN)


def photometric_fit(ref_rgb: np.ndarray, target_rgb: np.ndarray) -> tuple | None:
    """The encoder's gain and offset per channel that give the reference picture the mean and
    spread of the target's (the two cameras of a rig differ in exposure and white balance):
    (gains in units of 2^-10, offsets in units of 2^-4), or None where that rounds to the
    identity."""
    r = ref_rgb.reshape(-1, 3).astype(np.float64)
    t = target_rgb.reshape(-1, 3).astype(np.float64)
    gain = np.clip(t.std(0) / np.maximum(r.std(0), 1e-3), 0.25, 4.0)
    offset = np.clip(t.mean(0) - gain * r.mean(0), -255.0, 255.0)
    g = [int(v) for v in np.round(gain * GAIN_ONE)]
    o = [int(v) for v in np.round(offset * OFFSET_ONE)]
    return None if g == [GAIN_ONE] * 3 and o == [0] * 3 else (g, o)


def compensate(rgb: np.ndarray, params: tuple) -> np.ndarray:
    """Both sides: clamp(floor(x * gain + offset + 1/2)) per channel, in integers (exact)."""
    g, o = (np.asarray(v, dtype=np.int64) for v in params)
    x = rgb.astype(np.int64) * (g * OFFSET_ONE) + o * GAIN_ONE + (GAIN_ONE * OFFSET_ONE) // 2
    return np.clip(x // (GAIN_ONE * OFFSET_ONE), 0, 255).astype(np.uint8)


def pack_photometric(params: tuple) -> bytes:
    return _PHOTO.pack(*params[0], *params[1])


def unpack_photometric(data: bytes, where: str = "") -> tuple:
    if len(data) < _PHOTO.size:
        raise CodecError(f"{where}learned-stereo payload: photometric compensation truncated")
    v = _PHOTO.unpack_from(data, 0)
    return (list(v[:3]), list(v[3:])), bytes(data[_PHOTO.size:])


def encode_pair(intra, coder, first_rgb: np.ndarray, second_rgb: np.ndarray, q: int,
                ref_view: int, candidates: tuple = CANDIDATES) -> tuple:
    """-> (first payload, second payload, first picture, second picture) (uint8 RGB).

    For each (photometric, rate) of ``candidates``: the reference (the first view's decoded
    picture) is compensated in gain and offset (`photometric_fit`) when asked and that is not
    the identity; the disparity field (blocks of BLOCK px) is searched on it rate-constrained
    (`warp.block_disparity`, rate x `warp.disparity_rate(q)`); the second view is coded given
    the aligned reference. The smallest payload is kept."""
    from codecflow.codecs.learned.warp import (block_disparity, disparity_rate, pack_field,
                                               warp)

    h, w = second_rgb.shape[:2]
    if first_rgb.shape != second_rgb.shape:
        raise CodecError(f"learned-stereo: the views differ in size ({first_rgb.shape[1]}x"
                         f"{first_rgb.shape[0]} vs {w}x{h})")
    p1, pic1, _ = encode_rgb_latent(intra, first_rgb, q)
    lo, hi = disparity_range(ref_view)
    y = analyse(intra, second_rgb, q)
    grey = is_grey(second_rgb)
    fit = photometric_fit(pic1, second_rgb) if any(c[0] for c in candidates) else None
    best = None
    for photometric, factor in candidates:
        if photometric and fit is None:
            continue
        ref = compensate(pic1, fit) if photometric else pic1
        field = block_disparity(second_rgb, ref, BLOCK, lo, hi, factor * disparity_rate(q))
        c_int = condition_latent(intra, coder, warp(ref, field, BLOCK), q)
        strings, sym_crc, pic2, _ = code_latent(intra, coder, y, c_int, C_FRAC, q, h, w, grey)
        head = pack_photometric(fit) if photometric else b""
        flags = (FLAG_GREY if grey else 0) | (FLAG_PHOTOMETRIC if photometric else 0)
        p2 = pack_payload(int(q), flags, ref_view, h, w,
                          [head + pack_field(field, BLOCK)] + list(strings), sym_crc)
        if best is None or len(p2) < len(best[0]):
            best = (p2, pic2)
    return p1, best[0], pic1, best[1]


def decode_second(intra, coder, payload: bytes, ref_rgb: np.ndarray,
                  where: str = "") -> np.ndarray:
    """The second view's payload and the first view's decoded picture -> uint8 RGB."""
    from codecflow.codecs.learned.warp import unpack_field, warp

    q, flags, _, h, w, strings, sym_crc = unpack_payload(payload)
    if ref_rgb.shape[:2] != (h, w):
        raise CodecError(f"{where}learned-stereo: the view is {w}x{h}, its reference view "
                         f"{ref_rgb.shape[1]}x{ref_rgb.shape[0]}")
    field_bytes = strings[0]
    if flags & FLAG_PHOTOMETRIC:
        params, field_bytes = unpack_photometric(field_bytes, where)
        ref_rgb = compensate(ref_rgb, params)
    field, block = unpack_field(field_bytes, h, w, "learned-stereo")
    c_int = condition_latent(intra, coder, warp(ref_rgb, field, block), q)
    return decode_latent(intra, coder, strings[1:], sym_crc, c_int, C_FRAC, q, h, w,
                         bool(flags & FLAG_GREY), "learned-stereo", where)[0]


@register(CodecSpec("learned-stereo", unit_kinds=("pair",), views=(2,), needs_torch=True,
                    uses_device=True, threads="torch"))
class LearnedStereo(Codec):
    """Joint stereo codec: first view as learned-intra, second view conditioned on it."""

    version = "2"  # 2: range-coded fields, photometric compensation (1 still decodes)
    verifies_symbols = True

    def __init__(self, q: int = 32, device: str = "cpu", weights: str | None = None,
                 intra_weights: str | None = None, first_view: str = "left",
                 fast: bool = False, **params):
        super().__init__(q=q, device=device, **params)
        if params:
            raise CodecError(f"learned-stereo: unknown parameter(s) {sorted(params)}; known: "
                             f"weights, intra_weights, first_view, fast, device")
        if not isinstance(fast, bool):
            raise CodecError(f"learned-stereo: fast must be true or false, got {fast!r}")
        # fast: one disparity field search and coding pass instead of one per candidate
        self.candidates = CANDIDATES[:1] if fast else CANDIDATES
        if first_view not in VIEWS:
            raise CodecError(f"learned-stereo: first_view must be 'left' or 'right', got "
                             f"{first_view!r}")
        from codecflow.codecs.learned import weights as W

        self.first = VIEWS.index(first_view)
        self.device = resolve_device(device)
        intra_path = intra_weights or W.default_path("learned-intra")
        self.intra, intra_sha = W.load_intra_model(intra_path, self.device)
        path = weights or W.default_path("learned-stereo")
        self.coder, self._sha = load_conditional_coder(path, intra_sha, "learned-stereo",
                                                      self.device)

    @property
    def weights_id(self) -> str:
        return self._sha[:12]

    def encode(self, unit: Unit) -> CodedUnit:
        if unit.kind != "pair" or len(unit.frames) != 2:
            raise CodecError(f"learned-stereo codes stereo pairs, got a {unit.kind} unit of "
                             f"{len(unit.frames)} picture(s)")
        info = unit.info
        rgb = [colour.to_rgb(f, info.matrix, info.range) for f in unit.frames]
        first, second = self.first, 1 - self.first
        p1, p2, pic1, pic2 = encode_pair(self.intra, self.coder, rgb[first], rgb[second],
                                         self.q, first, self.candidates)
        recon = [None, None]
        recon[first] = colour.like(pic1, info.pix_fmt, info.matrix, info.range)
        recon[second] = colour.like(pic2, info.pix_fmt, info.matrix, info.range)
        payloads = {first: p1, second: p2}
        records = [Record(unit.first_frame,
                          (FLAG_INTRA if v == first else 0) | (FLAG_VIEW_RIGHT if v else 0),
                          payloads[v], recon[v].crc32(), v) for v in (0, 1)]
        return CodedUnit(unit.kind, unit.seq, unit.stream, records, recon, info,
                         unit.first_frame, unit.index, dict(unit.meta))

    def decode(self, records: list, info: StreamInfo, max_layer: int | None = None) -> dict:
        by_view = {}
        for r in records:
            if not r.payload:
                raise CodecError(f"learned-stereo: frame {r.frame_index} view {r.view} has an "
                                 f"empty payload")
            by_view[(r.frame_index, r.view)] = r
        out, refs = {}, {}
        for (fi, view), r in sorted(by_view.items()):  # first-coded views first
            if r.payload[0] == INTRA_MAGIC:
                rgb, _ = decode_rgb_latent(self.intra, r.payload, f"frame {fi} view {view}: ",
                                           (info.height, info.width))
                refs[(fi, view)] = rgb
                out[(fi, view)] = self._frame(rgb, info)
        for (fi, view), r in sorted(by_view.items()):
            if r.payload[0] == INTRA_MAGIC:
                continue
            if r.payload[0] != MAGIC:
                raise CodecError(f"learned-stereo: frame {fi} view {view}: unknown payload "
                                 f"format byte 0x{r.payload[0]:02x}")
            ref_view = unpack_payload(r.payload)[2]
            if ref_view == view or (fi, ref_view) not in refs:
                raise CodecError(f"learned-stereo: frame {fi} view {view} is coded against "
                                 f"view {ref_view}, which this unit does not hold as an intra "
                                 f"picture")
            rgb = decode_second(self.intra, self.coder, r.payload, refs[(fi, ref_view)],
                                f"frame {fi} view {view}: ")
            out[(fi, view)] = self._frame(rgb, info)
        return out

    @staticmethod
    def _frame(rgb: np.ndarray, info: StreamInfo):
        if rgb.shape[:2] != (info.height, info.width):
            raise CodecError(f"learned-stereo payload holds a {rgb.shape[1]}x{rgb.shape[0]} "
                             f"picture, the stream is {info.width}x{info.height}")
        return colour.like(rgb, info.pix_fmt, info.matrix, info.range)

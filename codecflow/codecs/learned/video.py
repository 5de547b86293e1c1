"""learned-video: learned P-frames in closed GOPs, coded against the previous decoded frame.

A GOP's first frame is coded as learned-intra codes it below q 48 (rate point q, never
oversampled, at every q; its record is a learned-intra payload). Every following frame is a P-frame: the previous decoded picture is moved by a block
motion field the encoder searches and signals (`warp.py`: the motion-compensated prediction
x_c), learned-intra's analysis of x_c (exact) is the condition, and the frame's latent is coded
by the conditional latent coder (`conditional.py`) given it. The coder's soft mask m in [0, 1]
blends conditional coding of y (m = 0) with conditional residual coding of y - m * p, p being
g_a(x_c) plus a learned correction (MaskCRT's idea, with the mask free to reach both ends). The
picture comes from learned-intra's synthesis: each frame's quantisation error is that of its
own latent, so errors do not drift along the GOP.

P-frame payload (see docs/bitstream.md, "learned-video payload"):

    offset size  field
    0      1     magic 0x56 ('V')
    1      1     payload version (1)
    2      1     q (0..63)
    3      1     flags: 0x01 grey picture
    4      2     original height (u16)
    6      2     original width  (u16)
    8      4 x 4 lengths of: motion field, z string, r-anchor string, r-non-anchor string
    24     4     CRC-32 of the quantised latents the encoder coded
    28     4     CRC-32 of bytes 0..27 and the strings
    32     ...   the strings

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
from codecflow.data import FLAG_INTRA, CodedUnit, Record, StreamInfo, Unit
from codecflow.errors import CodecError

MAGIC = 0x56
INTRA_MAGIC = 0x4C
PAYLOAD_VERSION = 1
_HEAD = struct.Struct("<BBBBHH")  # format byte, version, q, flags, height, width
N_STRINGS = 4  # motion field, z, r anchors, r non-anchors
BLOCK = 16     # motion blocks of 16 x 16 pixels (the encoder's choice; signalled)
SEARCH = 24    # the encoder's search range, pixels


def pack_payload(q: int, flags: int, h: int, w: int, strings: list, symbols_crc: int) -> bytes:
    return layout.pack(_HEAD.pack(MAGIC, PAYLOAD_VERSION, q, flags, h, w), strings, symbols_crc)


def unpack_payload(data: bytes) -> tuple:
    """-> (q, flags, h, w, [strings], symbols CRC); CodecError if malformed."""
    data = bytes(data)
    what = "learned-video"
    _, _, q, flags, h, w = layout.read_head(data, _HEAD, N_STRINGS, MAGIC, PAYLOAD_VERSION,
                                            what)
    if q > 63 or h == 0 or w == 0 or flags & ~FLAG_GREY:
        raise CodecError(f"{what} payload header invalid: q={q}, size {w}x{h}, flags "
                         f"0x{flags:02x}")
    strings, sym = layout.unpack(data, _HEAD.size, N_STRINGS, True, what)
    return q, flags, h, w, strings, sym


def encode_p(intra, coder, rgb: np.ndarray, q: int, ref_rgb: np.ndarray) -> tuple:
    """A P-frame against the previous decoded picture -> (payload, uint8 RGB picture)."""
    from codecflow.codecs.learned.warp import block_motion, pack_field, warp

    h, w = rgb.shape[:2]
    field = block_motion(rgb, ref_rgb, BLOCK, SEARCH)
    c_int = condition_latent(intra, coder, warp(ref_rgb, field, BLOCK), q)
    y = analyse(intra, rgb, q)
    grey = is_grey(rgb)
    strings, sym_crc, picture, _ = code_latent(intra, coder, y, c_int, C_FRAC, q, h, w, grey)
    payload = pack_payload(int(q), FLAG_GREY if grey else 0, h, w,
                           [pack_field(field, BLOCK)] + list(strings), sym_crc)
    return payload, picture


def decode_p(intra, coder, payload: bytes, ref_rgb: np.ndarray, where: str = "") -> np.ndarray:
    """A P-frame's payload and the previous decoded picture -> uint8 RGB."""
    from codecflow.codecs.learned.warp import unpack_field, warp

    q, flags, h, w, strings, sym_crc = unpack_payload(payload)
    if ref_rgb.shape[:2] != (h, w):
        raise CodecError(f"{where}learned-video: the frame is {w}x{h}, the previous one "
                         f"{ref_rgb.shape[1]}x{ref_rgb.shape[0]}")
    field, block = unpack_field(strings[0], h, w, "learned-video")
    c_int = condition_latent(intra, coder, warp(ref_rgb, field, block), q)
    return decode_latent(intra, coder, strings[1:], sym_crc, c_int, C_FRAC, q, h, w,
                         bool(flags & FLAG_GREY), "learned-video", where)[0]


@register(CodecSpec("learned-video", unit_kinds=("gop",), views=(1,), needs_torch=True,
                    uses_device=True, threads="torch"))
class LearnedVideo(Codec):
    """Closed GOPs: a learned-intra frame, then learned P-frames."""

    version = "2"  # 2: range-coded motion fields (version 1 streams still decode)
    verifies_symbols = True

    def __init__(self, q: int = 32, device: str = "cpu", weights: str | None = None,
                 intra_weights: str | None = None, **params):
        super().__init__(q=q, device=device, **params)
        if params:
            raise CodecError(f"learned-video: unknown parameter(s) {sorted(params)}; known: "
                             f"weights, intra_weights, device")
        from codecflow.codecs.learned import weights as W
        self.device = resolve_device(device)
        self.intra, intra_sha = W.load_intra_model(
            intra_weights or W.default_path("learned-intra"), self.device)
        self.coder, self._sha = load_conditional_coder(
            weights or W.default_path("learned-video"), intra_sha, "learned-video", self.device)

    @property
    def weights_id(self) -> str:
        return self._sha[:12]

    def encode(self, unit: Unit) -> CodedUnit:
        info = unit.info
        records, recon, ref = [], [], None
        for i, frame in enumerate(unit.frames):
            rgb = colour.to_rgb(frame, info.matrix, info.range)
            if ref is None:
                payload, picture, _ = encode_rgb_latent(self.intra, rgb, self.q)
            else:
                payload, picture = encode_p(self.intra, self.coder, rgb, self.q, ref)
            ref = picture
            rec = colour.like(picture, info.pix_fmt, info.matrix, info.range)
            records.append(Record(unit.first_frame + i, FLAG_INTRA if i == 0 else 0, payload,
                                  rec.crc32(), 0))
            recon.append(rec)
        return CodedUnit(unit.kind, unit.seq, unit.stream, records, recon, info,
                         unit.first_frame, unit.index, dict(unit.meta))

    def decode(self, records: list, info: StreamInfo, max_layer: int | None = None) -> dict:
        out, ref, prev = {}, None, None
        for r in sorted(records, key=lambda r: r.frame_index):
            where = f"frame {r.frame_index}: "
            if not r.payload:
                raise CodecError(f"learned-video: {where}empty payload")
            if r.payload[0] == INTRA_MAGIC:
                rgb, _ = decode_rgb_latent(self.intra, r.payload, where,
                                           (info.height, info.width))
            elif r.payload[0] == MAGIC:
                if ref is None or prev != r.frame_index - 1:
                    raise CodecError(f"learned-video: {where}a P-frame without the frame "
                                     f"before it in its GOP")
                rgb = decode_p(self.intra, self.coder, r.payload, ref, where)
            else:
                raise CodecError(f"learned-video: {where}unknown payload format byte "
                                 f"0x{r.payload[0]:02x}")
            prev, ref = r.frame_index, rgb
            if rgb.shape[:2] != (info.height, info.width):
                raise CodecError(f"learned-video payload holds a {rgb.shape[1]}x{rgb.shape[0]} "
                                 f"picture, the stream is {info.width}x{info.height}")
            out[(r.frame_index, 0)] = colour.like(rgb, info.pix_fmt, info.matrix, info.range)
        return out

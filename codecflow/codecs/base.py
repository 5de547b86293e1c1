"""The codec interface and the codec registry.

A codec turns a `Unit` (codecflow/data.py) into a `CodedUnit`: one `Record` per frame (per pair
for stereo) plus the reconstruction the decoder will produce, and turns records back into
frames. Stages never know which codec they run: they call `create_codec(name, ...)`.
"""

from __future__ import annotations

import importlib
import struct
from typing import Callable

import numpy as np

from codecflow.data import FLAG_INTRA, CodedUnit, Frame, Record, StreamInfo, Unit, frames_crc32
from codecflow.errors import CodecError


class Codec:
    """Interface shared by classical and learned codecs.

    Subclasses set ``name``, ``version``, ``unit_kinds`` (the unit kinds they accept, the first
    is the default) and implement `encode` and `decode`. ``q`` is 0..63 for every codec:
    higher q = higher quality, more bytes.
    """

    name: str = ""
    version: str = "1"
    unit_kinds: tuple = ("frame", "pair")
    input_fmt: str = "any"  # the pixel format the codec works in natively: yuv420p, rgb24, any
    # True when every payload carries a CRC of its decoded symbols and the decoder checks it:
    # a reconstruction CRC mismatch then means rounding after exact decoding, not corruption
    verifies_symbols: bool = False

    def __init__(self, q: int = 32, device: str = "cpu", **params):
        check_q(q)
        self.q = int(q)
        self.device = device
        self.params = params

    @property
    def weights_id(self) -> str:
        """Short sha256 of the weights the codec runs (learned codecs); '' for classical ones."""
        return ""

    def encode(self, unit: Unit) -> CodedUnit:
        raise NotImplementedError

    def decode(self, records: list, info: StreamInfo, kind: str) -> list:
        """Records of one unit -> list[Frame] (len 1, 2 for a pair, or N for a gop)."""
        raise NotImplementedError

    def header(self) -> dict:
        """Codec fields for the .cfl header."""
        return {"codec": self.name, "codec_version": self.version, "weights": self.weights_id,
                "q": self.q}


def check_q(q) -> None:
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or not 0 <= int(q) <= 63:
        raise CodecError(f"codec.q must be an integer in 0..63, got {q!r}")


# ----------------------------------------------------------------------------------- registry
# name -> "module:Class". Modules are imported lazily so that importing the registry never
# pulls in torch (only encode/decode stages may import torch).
_REGISTRY: dict[str, str] = {
    "x264": "codecflow.codecs.classical.pyav_codecs:X264",
    "x265": "codecflow.codecs.classical.pyav_codecs:X265",
    "x265-intra": "codecflow.codecs.classical.pyav_codecs:X265Intra",
    "jpeg": "codecflow.codecs.classical.opencv_codecs:Jpeg",
    "webp": "codecflow.codecs.classical.opencv_codecs:Webp",
    "learned-intra": "codecflow.codecs.learned.intra:LearnedIntra",
}
# Unit kinds each codec accepts, known without importing it (config validation uses this).
_UNIT_KINDS: dict[str, tuple] = {
    "x264": ("gop",),
    "x265": ("gop",),
    "x265-intra": ("frame", "pair", "gop"),
    "jpeg": ("frame", "pair", "gop"),
    "webp": ("frame", "pair", "gop"),
    "learned-intra": ("frame", "pair", "gop"),
}
ZOO_PREFIX = "compressai:"
# CompressAI's image zoo (compressai.zoo.image.cfgs), listed here so that config validation
# can check a name without importing torch; tests/codecs/learned check the list is current.
ZOO_MODELS = ("bmshj2018-factorized", "bmshj2018-factorized-relu", "bmshj2018-hyperprior",
              "cheng2020-anchor", "cheng2020-attn", "mbt2018", "mbt2018-mean")


def register(name: str, target: str, unit_kinds: tuple) -> None:
    _REGISTRY[name] = target
    _UNIT_KINDS[name] = tuple(unit_kinds)


def codec_names() -> list[str]:
    return sorted(_REGISTRY)


def is_known(name: str) -> bool:
    return name in _REGISTRY or name.startswith(ZOO_PREFIX)


def codec_unit_kinds(name: str) -> tuple:
    if name.startswith(ZOO_PREFIX):
        return ("frame", "pair", "gop")
    if name not in _UNIT_KINDS:
        raise CodecError(f"unknown codec {name!r}; known codecs: {', '.join(codec_names())} "
                         f"(or {ZOO_PREFIX}<zoo model name>)")
    return _UNIT_KINDS[name]


def codec_class(name: str) -> Callable:
    if name.startswith(ZOO_PREFIX):
        target = "codecflow.codecs.learned.zoo:ZooCodec"
    elif name in _REGISTRY:
        target = _REGISTRY[name]
    else:
        codec_unit_kinds(name)  # raises the clear error
        raise AssertionError
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def create_codec(name: str, q: int = 32, device: str = "cpu", **params) -> Codec:
    cls = codec_class(name)
    if name.startswith(ZOO_PREFIX):
        return cls(name[len(ZOO_PREFIX):], q=q, device=device, **params)
    return cls(q=q, device=device, **params)


# ------------------------------------------------------------------- per-picture (intra) codecs
_VIEW_LEN = struct.Struct("<I")


def pack_views(parts: list) -> bytes:
    """Sub-streams of one stereo pair -> one record payload (u32 length before each view)."""
    return b"".join(_VIEW_LEN.pack(len(p)) + bytes(p) for p in parts)


def unpack_views(payload: bytes, views: int) -> list:
    out, pos = [], 0
    for i in range(views):
        if pos + 4 > len(payload):
            raise CodecError(f"pair payload truncated: view {i} length missing")
        (n,) = _VIEW_LEN.unpack_from(payload, pos)
        pos += 4
        if pos + n > len(payload):
            raise CodecError(f"pair payload truncated: view {i} needs {n} bytes, "
                             f"{len(payload) - pos} left")
        out.append(payload[pos:pos + n])
        pos += n
    if pos != len(payload):
        raise CodecError(f"pair payload has {len(payload) - pos} trailing bytes")
    return out


class PictureCodec(Codec):
    """A codec that codes each picture on its own (JPEG, WebP, learned intra).

    Subclasses implement `encode_picture(frame, info) -> bytes` and
    `decode_picture(payload, info) -> Frame` (returning the stream's pix_fmt). This class maps
    them onto units: frame -> 1 record; pair -> 1 record with both views (`pack_views`);
    gop -> 1 intra record per frame. The reconstruction is always produced by decoding the
    payload bytes (the real decode path), and each record carries its CRC.
    """

    unit_kinds = ("frame", "pair", "gop")

    def encode(self, unit: Unit) -> CodedUnit:
        records, recon = [], []
        coded = [self.encode_picture_recon(f, unit.info) for f in unit.frames]
        if unit.kind == "pair":
            payload = pack_views([p for p, _ in coded])
            views = [r for _, r in coded]
            records.append(Record(unit.first_frame, FLAG_INTRA, payload, frames_crc32(views)))
            recon.extend(views)
        else:
            for i, (payload, rec) in enumerate(coded):
                records.append(Record(unit.first_frame + i, FLAG_INTRA, payload, rec.crc32()))
                recon.append(rec)
        return CodedUnit(unit.kind, unit.seq, unit.stream, records, recon, unit.info,
                         unit.first_frame, unit.index, dict(unit.meta))

    def decode_pair(self, payload: bytes, info: StreamInfo) -> list:
        return [self.decode_picture(p, info) for p in unpack_views(payload, 2)]

    def decode(self, records: list, info: StreamInfo, kind: str) -> list:
        if kind == "pair":
            return self.decode_pair(records[0].payload, info)
        return [self.decode_picture(r.payload, info) for r in records]

    def encode_picture(self, frame: Frame, info: StreamInfo) -> bytes:
        raise NotImplementedError

    def encode_picture_recon(self, frame: Frame, info: StreamInfo) -> tuple:
        """-> (payload bytes, the Frame every decoder reconstructs). By default the payload
        is decoded; a codec whose decoding is exact may return its own reconstruction."""
        payload = bytes(self.encode_picture(frame, info))
        return payload, self.decode_picture(payload, info)

    def decode_picture(self, payload: bytes, info: StreamInfo) -> Frame:
        raise NotImplementedError

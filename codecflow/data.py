"""The data model every stage shares: pictures (`Frame`), the independent pieces of work
(`Unit`), their coded form (`CodedUnit` of `Record`s) and what a decoder must know about a stream
(`StreamInfo`).

Pictures travel as `Frame`s: either I420 planes (``yuv420p``: Y, U, V, chroma of size
ceil(W/2) x ceil(H/2)) or one interleaved RGB plane (``rgb24``: H x W x 3). A `Unit` is a
frame, a stereo pair, or a closed GOP. Sources, the wire protocol and sinks import this module
without importing any codec.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

PIX_FMTS = ("yuv420p", "rgb24")
UNIT_KINDS = ("frame", "pair", "gop")
# colour matrix and range names (config choices list the default first)
MATRIX_CHOICES = ("bt709", "bt601")
RANGE_CHOICES = ("limited", "full")

# The largest picture a stream may have (pixels per view): 16384 x 16384, about 400 MB per I420
# frame. Larger sizes are refused with a clear error before any frame is allocated.
MAX_PIXELS = 1 << 28


def check_frame_size(width: int, height: int, where: str) -> None:
    """SourceError when a W x H picture is larger than MAX_PIXELS."""
    from codecflow.errors import SourceError

    if int(width) * int(height) > MAX_PIXELS:
        raise SourceError(f"{where}: {width}x{height} pictures ({int(width) * int(height):,} "
                          f"pixels) are larger than codecflow takes ({MAX_PIXELS:,} pixels, "
                          f"e.g. 16384x16384); check the size")

MAX_SIDE = 65535
STREAM_KEYS = ("width", "height", "views", "pix_fmt", "matrix", "range", "fps", "unit_kind",
               "gop")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# StreamInfo field -> (what it must be, check): for .cfl headers and wire messages alike
STREAM_FIELD_CHECKS = {
    "width": (f"an integer 1..{MAX_SIDE}", lambda v: is_int(v) and 1 <= v <= MAX_SIDE),
    "height": (f"an integer 1..{MAX_SIDE}", lambda v: is_int(v) and 1 <= v <= MAX_SIDE),
    "views": ("1 or 2", lambda v: is_int(v) and v in (1, 2)),
    "pix_fmt": (" or ".join(PIX_FMTS), lambda v: v in PIX_FMTS),
    "matrix": (" or ".join(MATRIX_CHOICES), lambda v: v in MATRIX_CHOICES),
    "range": (" or ".join(RANGE_CHOICES), lambda v: v in RANGE_CHOICES),
    "fps": ("a number > 0", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
            and 0 < v < 1e6),
    "unit_kind": (" or ".join(UNIT_KINDS), lambda v: v in UNIT_KINDS),
    "gop": ("an integer 1..65535", lambda v: is_int(v) and 1 <= v <= 65535),
}

# the per-picture quality rows of coded units (docs/stats.md)
PSNR_KEYS = ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "psnr_rgb")

# Record flags (see docs/bitstream.md)
FLAG_INTRA = 0x01
FLAG_UNIT_END = 0x02  # last record of its unit: a reader knows the unit is whole
FLAG_BASE_LAYER = 0x04
FLAG_ENH_LAYER = 0x08
FLAG_VIEW_RIGHT = 0x10


@dataclass
class Frame:
    """One picture. ``planes`` are C-contiguous uint8 arrays."""

    fmt: str
    planes: list

    @property
    def width(self) -> int:
        return int(self.planes[0].shape[1])

    @property
    def height(self) -> int:
        return int(self.planes[0].shape[0])

    @staticmethod
    def yuv420(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> "Frame":
        return Frame("yuv420p", [np.ascontiguousarray(p, dtype=np.uint8) for p in (y, u, v)])

    @staticmethod
    def rgb(rgb: np.ndarray) -> "Frame":
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"RGB frame must be HxWx3, got shape {rgb.shape}")
        return Frame("rgb24", [np.ascontiguousarray(rgb, dtype=np.uint8)])

    def crc32(self) -> int:
        crc = 0
        for p in self.planes:
            crc = zlib.crc32(np.ascontiguousarray(p).data, crc)
        return crc & 0xFFFFFFFF


def frames_crc32(frames: list[Frame]) -> int:
    crc = 0
    for f in frames:
        for p in f.planes:
            crc = zlib.crc32(np.ascontiguousarray(p).data, crc)
    return crc & 0xFFFFFFFF


def chroma_size(width: int, height: int) -> tuple[int, int]:
    return (width + 1) // 2, (height + 1) // 2


@dataclass
class StreamInfo:
    """What a decoder needs to know about a stream (it goes into the .cfl file header)."""

    width: int
    height: int
    pix_fmt: str = "yuv420p"
    views: int = 1
    fps: float = 30.0
    unit_kind: str = "frame"
    gop: int = 1
    matrix: str = "bt709"
    range: str = "limited"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Unit:
    """The independent piece of work. frames: 1 (frame), 2 (pair: left, right) or N (gop)."""

    kind: str
    seq: int
    stream: str
    frames: list
    info: StreamInfo
    pts: float = 0.0
    first_frame: int = 0  # index of frames[0] within its stream
    index: int = 0  # index of this unit within its stream (the .cfl unit number)
    meta: dict = field(default_factory=dict)


@dataclass
class Record:
    """One coded record of a .cfl file: one picture (frame index, view) at one layer.

    ``recon_crc`` is the CRC-32 of what this record decodes to (at its layer). Files of
    container version 1 may hold one record with both views of a stereo pair."""

    frame_index: int
    flags: int
    payload: bytes
    recon_crc: int
    view: int = 0  # 0 left (or mono), 1 right
    layer: int = 0  # 0 base, 1.. enhancement


@dataclass
class CodedUnit:
    kind: str
    seq: int
    stream: str
    records: list
    recon: list  # list[Frame]: what the decoder reconstructs from the records
    info: StreamInfo
    first_frame: int = 0
    index: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def payload_bytes(self) -> int:
        return sum(len(r.payload) for r in self.records)

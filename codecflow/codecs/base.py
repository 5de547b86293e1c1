"""The codec interface (the registry is `registry.py`; the contract is docs/codecs.md).

A codec turns a `Unit` (codecflow/data.py) into a `CodedUnit`: one `Record` per picture and
layer, plus the reconstruction the decoder will produce, and turns records back into pictures.
Stages never know which codec they run: they call `registry.create_codec(name, ...)` and read
the codec's `registry.CodecSpec`.
"""

from __future__ import annotations

import struct

import numpy as np

from codecflow.data import FLAG_INTRA, FLAG_VIEW_RIGHT, CodedUnit, Frame, Record, StreamInfo, Unit
from codecflow.errors import CodecError


class Codec:
    """Interface shared by classical and learned codecs.

    Subclasses are declared with `registry.register(CodecSpec(...))` (which sets ``spec``,
    ``name`` and ``unit_kinds``), set ``version`` and implement `encode` and `decode`. ``q`` is
    0..63 for every codec: higher q = higher quality, more bytes.
    """

    name: str = ""
    version: str = "1"
    unit_kinds: tuple = ("frame", "pair")
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

    def accepts_weights(self, stream_id: str) -> bool:
        """Whether a stream whose header names weights ``stream_id`` decodes with this codec's
        weights."""
        return stream_id == self.weights_id

    def encode(self, unit: Unit) -> CodedUnit:
        raise NotImplementedError

    def decode(self, records: list, info: StreamInfo, max_layer: int | None = None) -> dict:
        """Records of one unit (in decoding order) -> {(frame index, view): Frame}, each picture
        at the highest layer decoded (at most ``max_layer``). ``info.unit_kind`` is the unit's
        kind."""
        raise NotImplementedError

    def header(self) -> dict:
        """Codec fields for the .cfl header."""
        return {"codec": self.name, "codec_version": self.version, "weights": self.weights_id,
                "q": self.q}


def check_q(q) -> None:
    if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or not 0 <= int(q) <= 63:
        raise CodecError(f"codec.q must be an integer in 0..63, got {q!r}")


# ------------------------------------------------------------------- per-picture (intra) codecs
_VIEW_LEN = struct.Struct("<I")


def is_packed_pair(records: list, info: StreamInfo) -> bool:
    """A stereo pair written by container version 1: one record holding both views
    (`pack_views`). Version 2 writes one record per view."""
    return info.unit_kind == "pair" and len(records) == 1 and records[0].view == 0


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
    them onto units: frame -> 1 record; pair -> 1 record per view; gop -> 1 intra record per
    frame. The reconstruction is produced by decoding the payload bytes (the real decode path)
    unless the codec's decoding is exact (`encode_picture_recon`); each record carries its
    CRC.
    """

    unit_kinds = ("frame", "pair", "gop")

    def encode(self, unit: Unit) -> CodedUnit:
        records, recon = [], []
        for i, frame in enumerate(unit.frames):
            payload, rec = self.encode_picture_recon(frame, unit.info)
            view = i if unit.kind == "pair" else 0
            fidx = unit.first_frame + (0 if unit.kind == "pair" else i)
            flags = FLAG_INTRA | (FLAG_VIEW_RIGHT if view else 0)
            records.append(Record(fidx, flags, payload, rec.crc32(), view))
            recon.append(rec)
        return CodedUnit(unit.kind, unit.seq, unit.stream, records, recon, unit.info,
                         unit.first_frame, unit.index, dict(unit.meta))

    def decode(self, records: list, info: StreamInfo, max_layer: int | None = None) -> dict:
        out, packed = {}, is_packed_pair(records, info)
        for r in records:
            if packed:
                for view, part in enumerate(unpack_views(r.payload, 2)):
                    out[(r.frame_index, view)] = self.decode_picture(part, info)
            else:
                out[(r.frame_index, r.view)] = self.decode_picture(r.payload, info)
        return out

    def encode_picture(self, frame: Frame, info: StreamInfo) -> bytes:
        raise NotImplementedError

    def encode_picture_recon(self, frame: Frame, info: StreamInfo) -> tuple:
        """-> (payload bytes, the Frame every decoder reconstructs). By default the payload
        is decoded; a codec whose decoding is exact may return its own reconstruction."""
        payload = bytes(self.encode_picture(frame, info))
        return payload, self.decode_picture(payload, info)

    def decode_picture(self, payload: bytes, info: StreamInfo) -> Frame:
        raise NotImplementedError

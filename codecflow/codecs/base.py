"""The codec interface and the codec registry.

A codec turns a `Unit` (codecflow/data.py) into a `CodedUnit`: one `Record` per frame (per pair
for stereo) plus the reconstruction the decoder will produce, and turns records back into
frames. Stages never know which codec they run: they call `registry.create_codec(name, ...)` and read
the codec's `registry.CodecSpec`.
"""

from __future__ import annotations

import struct

import numpy as np

from codecflow.data import FLAG_INTRA, CodedUnit, Frame, Record, StreamInfo, Unit, frames_crc32
from codecflow.errors import CodecError


class Codec:
    """Interface shared by classical and learned codecs.

    Subclasses are declared with `registry.register(CodecSpec(...))` (which sets ``spec``,
    ``name`` and ``unit_kinds``), set ``version`` and implement `encode` and `decode`. ``q`` is 0..63 for every codec:
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

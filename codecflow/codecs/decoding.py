"""Decode a unit's records and check each record's reconstruction CRC.

Two failures stay distinct (docs/bitstream.md, "Decoding checks"):

* the decoded symbols differ from the encoder's (learned codecs carry a CRC of them): the stream
  is corrupt or incompatible; the codec raises `SymbolMismatch` and no picture is produced;
* the symbols match but the picture's CRC differs: the decoder rounded a float step differently
  from the encoder (another machine or library build). The picture is the right one up to that
  rounding, so it is kept with a warning; ``strict=True`` makes it an error. For codecs without
  a symbols CRC (classical codecs) a mismatch is always an error.
"""

from __future__ import annotations

import logging

from codecflow.data import StreamInfo, frames_crc32

from codecflow.codecs.base import Codec
from codecflow.errors import ReconstructionMismatch

log = logging.getLogger("codecflow.decode")

ROUNDING_NOTE = ("the decoded symbols match the encoder's, so this picture differs from the "
                 "encoder's only where a float step after the exact latent decoding rounded "
                 "differently (the colour conversion to YUV: at most 1 level in a few pixels; "
                 "learned synthesis itself is exact integer arithmetic)")


def decode_checked(codec: Codec, records: list, info: StreamInfo, kind: str, where: str = "",
                   strict: bool = False, mismatches: list | None = None):
    """-> list[Frame]. Raises ReconstructionMismatch naming the frame when a CRC differs and the
    mismatch cannot be explained by rounding alone (or ``strict``). Tolerated mismatches are
    logged and appended to ``mismatches`` (frame indexes) when given."""
    frames = codec.decode(records, info, kind)
    if kind == "pair":
        checks = [(records[0], frames_crc32(frames), "frame {} (stereo pair)")]
    else:
        checks = [(rec, fr.crc32(), "frame {}") for rec, fr in zip(records, frames)]
    for rec, got, label in checks:
        if got == rec.recon_crc:
            continue
        what = (f"{where}{label.format(rec.frame_index)}: reconstruction CRC {got:08x} != "
                f"encoder's {rec.recon_crc:08x}")
        if codec.verifies_symbols and not strict:
            log.warning("%s; %s. The picture is kept (--strict makes this an error).", what,
                        ROUNDING_NOTE)
            if mismatches is not None:
                mismatches.append(rec.frame_index)
            continue
        if codec.verifies_symbols:
            raise ReconstructionMismatch(f"{what}; {ROUNDING_NOTE}; refused with --strict")
        raise ReconstructionMismatch(
            f"{what}; the decoder does not reproduce the encoder (different device/precision "
            f"or corrupt payload)")
    return frames

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

import dataclasses
import logging

from codecflow.data import StreamInfo, frames_crc32

from codecflow.codecs.base import Codec, is_packed_pair
from codecflow.errors import ReconstructionMismatch

log = logging.getLogger("codecflow.decode")

ROUNDING_NOTE = ("the decoded symbols match the encoder's, so this picture differs from the "
                 "encoder's only where a float step after the exact latent decoding rounded "
                 "differently (the colour conversion to YUV: at most 1 level in a few pixels; "
                 "learned synthesis itself is exact integer arithmetic)")


def decode_unit(codec: Codec, records: list, info: StreamInfo, where: str = "",
                strict: bool = False, mismatches: list | None = None,
                max_layer: int | None = None) -> dict:
    """Decode one unit's records -> {(frame index, view): Frame} at the highest layer decoded
    (at most ``max_layer``), checking every record's reconstruction CRC against what its own
    layer decodes to.

    Raises ReconstructionMismatch naming the frame when a CRC differs and the mismatch cannot be
    explained by rounding alone (or ``strict``). Tolerated mismatches are logged and appended to
    ``mismatches`` (frame indexes) when given."""
    if max_layer is not None:
        records = [r for r in records if r.layer <= max_layer]
    top = max((r.layer for r in records), default=0)
    pictures = {}
    for layer in sorted({r.layer for r in records}):
        upto = [r for r in records if r.layer <= layer]
        pictures = codec.decode(upto, info, layer if layer < top else max_layer)
        for rec in (r for r in upto if r.layer == layer):
            _check(codec, rec, info, records, pictures, where, strict, mismatches)
    return pictures


def _check(codec, rec, info, records, pictures, where, strict, mismatches) -> None:
    keys = ([(rec.frame_index, 0), (rec.frame_index, 1)] if is_packed_pair(records, info)
            else [(rec.frame_index, rec.view)])
    got = frames_crc32([pictures[k] for k in keys])
    if got == rec.recon_crc:
        return
    label = f"frame {rec.frame_index}" + (f" view {rec.view}" if info.views == 2 else "") + \
        (f" layer {rec.layer}" if rec.layer else "")
    status = getattr(codec, "side_info_status", {}).get(keys[0])
    if status not in (None, "refined"):
        # the encoder refined this view with the other one, which this unit lacks: the plain
        # picture is the exact decode of verified latents, only not the encoder's refinement
        log.warning("%s%s: decoded without side information (%s); the encoder's picture was "
                    "refined with the other view, so its CRC cannot be compared (the latents "
                    "are verified)", where, label, status)
        return
    what = f"{where}{label}: reconstruction CRC {got:08x} != encoder's {rec.recon_crc:08x}"
    if codec.verifies_symbols and not strict:
        log.warning("%s; %s. The picture is kept (--strict makes this an error).", what,
                    ROUNDING_NOTE)
        if mismatches is not None:
            mismatches.append(rec.frame_index)
        return
    if codec.verifies_symbols:
        raise ReconstructionMismatch(f"{what}; {ROUNDING_NOTE}; refused with --strict")
    raise ReconstructionMismatch(
        f"{what}; the decoder does not reproduce the encoder (different device/precision "
        f"or corrupt payload)")


def decode_checked(codec: Codec, records: list, info: StreamInfo, kind: str | None = None,
                   where: str = "", strict: bool = False, mismatches: list | None = None,
                   max_layer: int | None = None) -> list:
    """`decode_unit` as a list of pictures in (frame index, view) order. ``kind`` overrides
    ``info.unit_kind``."""
    if kind is not None and kind != info.unit_kind:
        info = dataclasses.replace(info, unit_kind=kind)
    pics = decode_unit(codec, records, info, where, strict, mismatches, max_layer)
    return [pics[k] for k in sorted(pics)]

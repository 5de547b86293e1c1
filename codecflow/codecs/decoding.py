"""Decode a unit's records and check each record's reconstruction CRC."""

from __future__ import annotations

from codecflow.codecs.base import Codec, StreamInfo, frames_crc32
from codecflow.errors import ReconstructionMismatch


def decode_checked(codec: Codec, records: list, info: StreamInfo, kind: str, where: str = ""):
    """-> list[Frame]. Raises ReconstructionMismatch naming the frame when a CRC differs."""
    frames = codec.decode(records, info, kind)
    if kind == "pair":
        got = frames_crc32(frames)
        if got != records[0].recon_crc:
            raise ReconstructionMismatch(
                f"{where}frame {records[0].frame_index} (stereo pair): reconstruction CRC "
                f"{got:08x} != encoder's {records[0].recon_crc:08x}; the decoder does not "
                f"reproduce the encoder (different device/precision or corrupt payload)")
        return frames
    for rec, fr in zip(records, frames):
        got = fr.crc32()
        if got != rec.recon_crc:
            raise ReconstructionMismatch(
                f"{where}frame {rec.frame_index}: reconstruction CRC {got:08x} != encoder's "
                f"{rec.recon_crc:08x}; the decoder does not reproduce the encoder "
                f"(different device/precision or corrupt payload)")
    return frames

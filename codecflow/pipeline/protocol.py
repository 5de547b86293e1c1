"""Wire messages: ZeroMQ multipart ``[header, buf0, buf1, ...]``.

The header is a msgpack map with ``v`` (protocol version), ``kind`` and kind-specific fields;
buffers are raw bytes (image planes, coded payloads) sent zero-copy. Never pickle.
Spec: docs/protocol.md.
"""

from __future__ import annotations

import msgpack
import numpy as np

from codecflow.data import CodedUnit, Frame, Record, StreamInfo, Unit
from codecflow.pipeline.wire_check import (FIELDS, ProtocolError, check_fields,
                                           check_frames_fit)

VERSION = 1
KINDS = tuple(FIELDS)  # unit coded stream eos stats ready heartbeat ack error stop
REORDER_WINDOW = 256  # the most sequence numbers between the oldest unit not yet at the sink
#                       and the newest one sent; the sink drops anything further ahead


def pack_header(header: dict) -> bytes:
    h = {"v": VERSION}
    h.update(header)
    return msgpack.packb(h, use_bin_type=True)


def unpack_header(blob) -> dict:
    """A received header, decoded and checked field by field (`wire_check`): ProtocolError
    (the receiver logs and drops the message) for anything malformed."""
    try:
        h = msgpack.unpackb(bytes(blob), raw=False)
    except Exception as e:  # noqa: BLE001 - any decode failure is a protocol error
        raise ProtocolError(f"undecodable message header ({e})") from None
    if not isinstance(h, dict):
        raise ProtocolError("message header is not a map")
    if h.get("v") != VERSION:
        raise ProtocolError(f"protocol version {h.get('v')!r} is not supported (this codecflow "
                            f"speaks version {VERSION}); message dropped")
    if h.get("kind") not in KINDS:
        raise ProtocolError(f"unknown message kind {h.get('kind')!r:.40}; message dropped")
    return check_fields(h)


def _buf(frame) -> memoryview:
    """A received zmq.Frame (copy=False) or bytes -> memoryview without copying."""
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


# ----------------------------------------------------------------------------- frames / units
def frames_to_wire(frames: list) -> tuple[list, list]:
    meta, bufs = [], []
    for f in frames:
        meta.append({"fmt": f.fmt, "shapes": [list(p.shape) for p in f.planes]})
        bufs.extend(np.ascontiguousarray(p) for p in f.planes)
    return meta, bufs


def frames_from_wire(meta: list, bufs: list) -> list:
    if sum(len(m["shapes"]) for m in meta) > len(bufs):
        raise ProtocolError(f"message describes {sum(len(m['shapes']) for m in meta)} planes "
                            f"but carries {len(bufs)} buffers; dropped")
    frames, i = [], 0
    for m in meta:
        planes = []
        for shape in m["shapes"]:
            arr = np.frombuffer(_buf(bufs[i]), dtype=np.uint8)
            expected = int(np.prod(shape))
            if arr.size != expected:
                raise ProtocolError(f"plane {i}: {arr.size} bytes, header says {shape}")
            planes.append(arr.reshape(shape))
            i += 1
        frames.append(Frame(m["fmt"], planes))
    return frames


def unit_to_msg(unit: Unit, t_read: float) -> list:
    meta, bufs = frames_to_wire(unit.frames)
    header = {"kind": "unit", "unit": unit.kind, "seq": unit.seq, "stream": unit.stream,
              "pts": unit.pts, "first_frame": unit.first_frame, "index": unit.index,
              "info": unit.info.to_dict(), "frames": meta, "meta": unit.meta, "t_read": t_read}
    return [pack_header(header), *bufs]


def unit_from_msg(header: dict, bufs: list) -> Unit:
    """A checked ``unit`` header (`unpack_header`) and its buffers -> Unit; ProtocolError if
    the frames do not fit the stream or the buffers."""
    check_frames_fit(header["frames"], header["info"], "unit")
    if len(bufs) != sum(len(m["shapes"]) for m in header["frames"]):
        raise ProtocolError(f"unit message carries {len(bufs)} buffers for "
                            f"{sum(len(m['shapes']) for m in header['frames'])} planes; dropped")
    frames = frames_from_wire(header["frames"], bufs)
    return Unit(header["unit"], header["seq"], header["stream"], frames,
                StreamInfo(**header["info"]), header.get("pts", 0.0),
                header.get("first_frame", 0), header.get("index", 0), header.get("meta", {}))


def coded_to_msg(coded: CodedUnit, extra: dict, with_recon: bool) -> list:
    records = [{"frame_index": r.frame_index, "flags": r.flags, "recon_crc": r.recon_crc,
                "view": r.view, "layer": r.layer} for r in coded.records]
    bufs = [r.payload for r in coded.records]
    header = {"kind": "coded", "unit": coded.kind, "seq": coded.seq, "stream": coded.stream,
              "first_frame": coded.first_frame, "index": coded.index,
              "info": coded.info.to_dict(), "records": records, "meta": coded.meta}
    header.update(extra)
    if with_recon:
        meta, planes = frames_to_wire(coded.recon)
        header["recon"] = meta
        bufs.extend(planes)
    return [pack_header(header), *bufs]


def coded_from_msg(header: dict, bufs: list) -> CodedUnit:
    """A checked ``coded`` header and its buffers (payloads, then recon planes) -> CodedUnit;
    ProtocolError if they do not fit."""
    n = len(header["records"])
    recon = header.get("recon") or []
    check_frames_fit(recon, header["info"], "coded")
    planes = sum(len(m["shapes"]) for m in recon)
    if len(bufs) != n + planes:
        raise ProtocolError(f"coded message carries {len(bufs)} buffers for {n} records and "
                            f"{planes} planes; dropped")
    records = [Record(r["frame_index"], r["flags"], bytes(_buf(b)), r["recon_crc"],
                      r.get("view", 0), r.get("layer", 0))
               for r, b in zip(header["records"], bufs[:n])]
    recon = frames_from_wire(header["recon"], bufs[n:]) if header.get("recon") else []
    return CodedUnit(header["unit"], header["seq"], header["stream"], records, recon,
                     StreamInfo(**header["info"]), header.get("first_frame", 0),
                     header.get("index", 0), header.get("meta", {}))


def control(kind: str, **fields) -> list:
    return [pack_header({"kind": kind, **fields})]

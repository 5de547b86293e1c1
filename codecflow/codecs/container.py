"""The `.cfl` bitstream container: one file per stream, append-only, readable while written.

Layout (all integers little-endian; full spec in docs/bitstream.md):

    file   = MAGIC(8) version:u16 header_len:u32 header(msgpack map) header_crc:u32 record*
    record = body_len:u32 body crc32(body):u32
    body   = type:u8 flags:u8 unit:u32 frame_index:u32 view:u8 layer:u8 recon_crc:u32 payload
             (version 1: no view and layer bytes; view and layer come from the flags)

A reader stops at the first truncated or corrupt record and reports how many whole units it
read (a unit is whole once its record flagged UNIT_END has been read).
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import msgpack

from codecflow.data import (FLAG_ENH_LAYER, FLAG_UNIT_END, FLAG_VIEW_RIGHT,
                            STREAM_FIELD_CHECKS, STREAM_KEYS, Record, StreamInfo, is_int)
from codecflow.errors import ContainerError

MAGIC = b"\x89CFL\r\n\x1a\n"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
REC_CODED = 1
REC_END = 2

_PREFIX = struct.Struct("<HI")  # version, header_len
_LEN = struct.Struct("<I")
_BODY = struct.Struct("<BBIIBBI")  # type, flags, unit, frame_index, view, layer, recon_crc
_BODY_V1 = struct.Struct("<BBIII")  # type, flags, unit, frame_index, recon_crc
_CRC = struct.Struct("<I")
MAX_RECORD = 1 << 30

HEADER_KEYS = ("codec", "codec_version", "weights", "width", "height", "views", "pix_fmt",
               "matrix", "range", "fps", "unit_kind", "gop", "q")




def stream_header(info: StreamInfo, codec_fields: dict, stream: str) -> dict:
    """The file header of a stream: the codec's fields (`Codec.header()`), the stream's
    StreamInfo fields and its name. The only place a header is built."""
    header = dict(codec_fields)
    header.update({k: getattr(info, k) for k in STREAM_KEYS})
    header["stream"] = stream
    return header


def header_stream_info(header: dict) -> StreamInfo:
    """The StreamInfo a file header describes. The only place a header is read back."""
    return StreamInfo(**{k: header[k] for k in STREAM_KEYS})


# key -> (what it must be, check): the codec's fields, then the stream's (`data.py`)
FIELD_CHECKS = {
    "codec": ("a non-empty string", lambda v: isinstance(v, str) and v != ""),
    "codec_version": ("a string", lambda v: isinstance(v, str)),
    "weights": ("a string", lambda v: isinstance(v, str)),
    "q": ("an integer 0..63", lambda v: is_int(v) and 0 <= v <= 63),
    **STREAM_FIELD_CHECKS,
}


def check_header(header, where: str) -> dict:
    """The file header, every field checked: a ContainerError naming the key, what it must be
    and what it is (never a KeyError or TypeError from deeper down)."""
    if not isinstance(header, dict):
        raise ContainerError(f"{where}: file header is not a map (got {type(header).__name__})")
    for key, (what, ok) in FIELD_CHECKS.items():
        if key not in header:
            raise ContainerError(f"{where}: file header lacks {key!r} (must be {what})")
        try:
            good = ok(header[key])
        except TypeError:  # e.g. an unhashable value tested for membership
            good = False
        if not good:
            raise ContainerError(f"{where}: file header {key!r} must be {what}, got "
                                 f"{header[key]!r:.60}")
    if "stream" in header and not isinstance(header["stream"], str):
        raise ContainerError(f"{where}: file header 'stream' must be a string, got "
                             f"{header['stream']!r:.60}")
    if (header["unit_kind"] == "pair") != (header["views"] == 2):
        raise ContainerError(f"{where}: file header unit_kind {header['unit_kind']!r} does not "
                             f"fit views {header['views']}")
    return header


def encode_header(header: dict) -> bytes:
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise ValueError(f"container header lacks {missing}")
    blob = msgpack.packb(header, use_bin_type=True)
    return MAGIC + _PREFIX.pack(FORMAT_VERSION, len(blob)) + blob + _CRC.pack(zlib.crc32(blob))


def record_size(rec: Record) -> int:
    """Bytes a coded record takes in a .cfl file (length, body header, payload, CRC)."""
    return _LEN.size + _BODY.size + len(rec.payload) + _CRC.size


def encode_record(rtype: int, unit: int, rec: Record) -> bytes:
    if not (0 <= rec.view <= 255 and 0 <= rec.layer <= 255):
        raise ValueError(f"record view {rec.view} / layer {rec.layer} outside 0..255")
    body = _BODY.pack(rtype, rec.flags & 0xFF, unit, rec.frame_index, rec.view, rec.layer,
                      rec.recon_crc) + rec.payload
    return _LEN.pack(len(body)) + body + _CRC.pack(zlib.crc32(body))


def write_whole(f, blob) -> None:
    """Append ``blob`` to the unbuffered file ``f`` whole, or not at all: on an error (a full
    disk) the file is cut back to where it was and the OSError raised."""
    start = f.tell()
    view = memoryview(blob)
    try:
        while view:
            n = f.write(view)
            if not n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[n:]
    except OSError:
        try:
            f.truncate(start)
            f.seek(start)
        except OSError:
            pass
        raise


class CflWriter:
    """Writes one stream. Each unit is written whole or not at all (`write_whole`), so a reader
    (or a crash, or a full disk) sees whole units."""

    def __init__(self, path: str | os.PathLike, header: dict):
        self.path = os.fspath(path)
        self._f: BinaryIO = open(self.path, "wb", buffering=0)
        head = encode_header(header)
        write_whole(self._f, head)
        self.bytes_written = len(head)
        self.units = 0
        self.frames = 0
        self.closed = False

    def write_unit(self, unit: int, records: list[Record]) -> int:
        """Append the records of one unit; returns the bytes written for it (headers included).
        OSError (nothing of the unit written) when the disk refuses it."""
        blobs = []
        for i, rec in enumerate(records):
            flags = rec.flags | (FLAG_UNIT_END if i == len(records) - 1 else 0)
            blobs.append(encode_record(REC_CODED, unit, Record(
                rec.frame_index, flags, rec.payload, rec.recon_crc, rec.view, rec.layer)))
        blob = b"".join(blobs)
        write_whole(self._f, blob)
        self.bytes_written += len(blob)
        self.units += 1
        self.frames = max(self.frames, max((r.frame_index for r in records), default=-1) + 1)
        return len(blob)

    def mark(self) -> tuple:
        """Where the file stands now, for `rollback`."""
        return self.bytes_written, self.units, self.frames

    def rollback(self, mark: tuple) -> None:
        """Cut the file back to ``mark`` (a unit whose other outputs failed)."""
        self.bytes_written, self.units, self.frames = mark
        self._f.truncate(self.bytes_written)
        self._f.seek(self.bytes_written)

    def close(self, frames: int | None = None) -> None:
        if self.closed:
            return
        end = msgpack.packb({"units": self.units, "frames": frames if frames is not None
                             else self.frames}, use_bin_type=True)
        blob = encode_record(REC_END, self.units, Record(0, 0, end, 0))
        try:
            write_whole(self._f, blob)
            os.fsync(self._f.fileno())
        finally:
            self._f.close()
            self.closed = True
        self.bytes_written += len(blob)

    def abort(self) -> None:
        """Close without an end record (the stream was cut short); whole units stay readable."""
        if not self.closed:
            self._f.close()
            self.closed = True


@dataclass
class ReadStatus:
    units: int = 0  # whole units read
    complete: bool = False  # the end record was read
    error: str | None = None  # why reading stopped early (truncated / corrupt record)
    end: dict = field(default_factory=dict)
    claimed: dict = field(default_factory=dict)  # the end record as read, even when wrong

    def describe(self) -> str:
        if self.complete:
            return f"{self.units} units, stream complete"
        why = self.error or "no end record (stream still being written, or cut short)"
        return f"{self.units} whole units decoded; stopped: {why}"


class CflReader:
    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            self._f: BinaryIO = open(self.path, "rb")
        except FileNotFoundError:
            raise ContainerError(f"{self.path}: no such file") from None
        except OSError as e:
            raise ContainerError(f"{self.path}: cannot open ({e.strerror})") from None
        try:
            self.header = self._read_header()
        except BaseException:
            self._f.close()
            raise
        self.status = ReadStatus()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read_header(self) -> dict:
        f = self._f
        magic = f.read(len(MAGIC))
        if magic != MAGIC:
            raise ContainerError(f"{self.path}: not a codecflow .cfl file (bad magic {magic[:8]!r})")
        pre = f.read(_PREFIX.size)
        if len(pre) < _PREFIX.size:
            raise ContainerError(f"{self.path}: file header is truncated")
        version, hlen = _PREFIX.unpack(pre)
        if version not in READ_VERSIONS:
            raise ContainerError(f"{self.path}: .cfl format version {version} is not supported "
                                 f"(this codecflow reads versions "
                                 f"{', '.join(map(str, READ_VERSIONS))})")
        self.version = version
        blob = f.read(hlen)
        crc = f.read(_CRC.size)
        if len(blob) < hlen or len(crc) < _CRC.size:
            raise ContainerError(f"{self.path}: file header is truncated")
        if zlib.crc32(blob) != _CRC.unpack(crc)[0]:
            raise ContainerError(f"{self.path}: file header is corrupt (CRC mismatch)")
        try:
            header = msgpack.unpackb(blob, raw=False)
        except Exception as e:  # noqa: BLE001 - msgpack raises several kinds
            raise ContainerError(f"{self.path}: file header is not valid msgpack "
                                 f"({type(e).__name__}: {e})") from None
        return check_header(header, self.path)

    def _read_record(self):
        """-> (type, unit, Record) or None at a clean end of file; sets status.error on damage."""
        f = self._f
        pos = f.tell()
        raw = f.read(_LEN.size)
        if not raw:
            return None
        if len(raw) < _LEN.size:
            self.status.error = f"truncated record length at byte {pos}"
            return None
        (blen,) = _LEN.unpack(raw)
        fmt = _BODY if self.version >= 2 else _BODY_V1
        if blen < fmt.size or blen > MAX_RECORD:
            self.status.error = f"corrupt record at byte {pos} (length {blen})"
            return None
        body = f.read(blen)
        crc = f.read(_CRC.size)
        if len(body) < blen or len(crc) < _CRC.size:
            self.status.error = f"truncated record at byte {pos}"
            return None
        if zlib.crc32(body) != _CRC.unpack(crc)[0]:
            self.status.error = f"corrupt record at byte {pos} (CRC mismatch)"
            return None
        if self.version >= 2:
            rtype, flags, unit, fidx, view, layer, rcrc = _BODY.unpack_from(body)
        else:
            rtype, flags, unit, fidx, rcrc = _BODY_V1.unpack_from(body)
            view, layer = int(bool(flags & FLAG_VIEW_RIGHT)), int(bool(flags & FLAG_ENH_LAYER))
        return rtype, unit, Record(fidx, flags, bytes(body[fmt.size:]), rcrc, view, layer)

    def units(self, max_layer: int | None = None) -> Iterator[tuple[int, list[Record]]]:
        """Yield (unit number, records) for each whole unit, in file order. With
        ``max_layer``, records of higher layers are skipped (read past, never decoded).

        Order is checked, not trusted: units must be numbered 0, 1, 2, ... and each unit's
        frame indexes must continue where the previous unit's ended (a unit missing, swapped
        or repeated stops the reader there), and the end record's counts must match what was
        read; otherwise the file is not complete and `status.error` says why."""
        pending: list[Record] = []
        current = None
        next_frame = 0
        while True:
            item = self._read_record()
            if item is None:
                break
            rtype, unit, rec = item
            if rtype == REC_END:
                self._check_end(rec.payload, next_frame)
                break
            if rtype != REC_CODED:
                self.status.error = f"unknown record type {rtype}"
                break
            if current is None and unit != self.status.units:
                self.status.error = (f"unit {unit} where unit {self.status.units} was expected "
                                     f"(units missing, swapped or repeated)")
                break
            if current is not None and unit != current:
                self.status.error = f"unit {current} is missing its last record"
                break
            current = unit
            pending.append(rec)
            if rec.flags & FLAG_UNIT_END:
                why = self._unit_order_error(pending, next_frame)
                if why:
                    self.status.error = f"unit {unit}: {why}"
                    pending = []
                    break
                next_frame = max(r.frame_index for r in pending) + 1
                self.status.units += 1
                if max_layer is not None:
                    pending = [r for r in pending if r.layer <= max_layer]
                yield unit, pending
                pending, current = [], None
        if pending and self.status.error is None:
            self.status.error = f"unit {current} is incomplete (file cut inside it)"

    def _unit_order_error(self, records: list, next_frame: int) -> str | None:
        h = self.header
        fis = [r.frame_index for r in records]
        span = h["gop"] if h["unit_kind"] == "gop" else 1
        if fis[0] != next_frame:
            return (f"starts at frame {fis[0]}, but the previous unit ended before frame "
                    f"{next_frame} (frames missing, swapped or repeated)")
        if any(b - a not in (0, 1) for a, b in zip(fis, fis[1:])) or fis[-1] - fis[0] >= span:
            return f"frame indexes {fis[:8]} are not consecutive within a {h['unit_kind']} unit"
        if any(r.view >= h["views"] for r in records):
            return f"a record of view {max(r.view for r in records)} in a {h['views']}-view stream"
        return None

    def _check_end(self, payload: bytes, frames: int) -> None:
        try:
            end = msgpack.unpackb(payload, raw=False)
        except Exception as e:  # noqa: BLE001 - msgpack raises several kinds
            self.status.error = f"end record is not valid msgpack ({type(e).__name__})"
            return
        if not (isinstance(end, dict) and is_int(end.get("units")) and
                is_int(end.get("frames"))):
            self.status.error = f"end record is malformed: {end!r:.80}"
            return
        self.status.claimed = end
        if end["units"] != self.status.units or end["frames"] != frames:
            self.status.error = (f"end record says {end['units']} units / {end['frames']} "
                                 f"frames, the file holds {self.status.units} / {frames}")
            return
        self.status.complete = True
        self.status.end = end

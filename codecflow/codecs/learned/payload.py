"""The payload layout every learned codec uses for one coded picture:

    fixed head (codec-defined, starts with a format byte and a version byte)
    u32 length of each rANS string
    [u32 CRC-32 of the quantised latents]      (codecs with exact decoding)
    u32 CRC-32 of everything before it (the head and lengths, [symbols CRC]) and the strings
    the strings, in order

All integers little-endian. `unpack` checks the total length and the CRC before anything
reaches an entropy decoder, so corrupt bytes never do.
"""

from __future__ import annotations

import struct
import zlib

from codecflow.errors import CodecError, SymbolMismatch

_U32 = struct.Struct("<I")


def pack(head: bytes, strings: list, symbols_crc: int | None = None) -> bytes:
    out = bytes(head) + b"".join(_U32.pack(len(s)) for s in strings)
    if symbols_crc is not None:
        out += _U32.pack(symbols_crc)
    body = b"".join(bytes(s) for s in strings)
    crc = zlib.crc32(body, zlib.crc32(out)) & 0xFFFFFFFF
    return out + _U32.pack(crc) + body


def unpack(payload: bytes, head_size: int, n_strings: int, symbols_crc: bool,
           what: str) -> tuple:
    """-> (strings, symbols CRC or None). CodecError naming ``what`` on any damage."""
    payload = bytes(payload)
    pos = head_size + 4 * n_strings + (4 if symbols_crc else 0)
    if len(payload) < pos + 4:
        raise CodecError(f"{what} payload truncated: {len(payload)} bytes, its header alone "
                         f"needs {pos + 4}")
    lens = [_U32.unpack_from(payload, head_size + 4 * i)[0] for i in range(n_strings)]
    sym = _U32.unpack_from(payload, pos - 4)[0] if symbols_crc else None
    (crc,) = _U32.unpack_from(payload, pos)
    need = pos + 4 + sum(lens)
    if len(payload) != need:
        kind = "truncated" if len(payload) < need else "has trailing bytes"
        raise CodecError(f"{what} payload {kind}: header announces {need} bytes, got "
                         f"{len(payload)}")
    got = zlib.crc32(payload[pos + 4:], zlib.crc32(payload[:pos])) & 0xFFFFFFFF
    if got != crc:
        raise CodecError(f"{what} payload corrupt: CRC-32 {got:08x} != {crc:08x} in its header")
    strings, at = [], pos + 4
    for n in lens:
        strings.append(payload[at:at + n])
        at += n
    return strings, sym


def read_head(payload: bytes, head: struct.Struct, n_strings: int, magic: int, version: int,
              what: str) -> tuple:
    """The fields of a payload's fixed head, after checking its length, format byte and
    version. CodecError naming ``what`` otherwise."""
    if len(payload) < head.size:
        raise CodecError(f"{what} payload truncated: {len(payload)} bytes, the header alone "
                         f"needs {head.size + 4 * n_strings + 8}")
    fields = head.unpack_from(payload, 0)
    if fields[0] != magic:
        raise CodecError(f"{what} payload: bad format byte 0x{fields[0]:02x} (expected "
                         f"0x{magic:02x}); not a {what} picture")
    if fields[1] != version:
        raise CodecError(f"{what} payload version {fields[1]} is not supported (this decoder "
                         f"reads version {version})")
    return fields


def check_symbols(got: int, expected: int, where: str = "") -> None:
    """SymbolMismatch when the decoded latents' CRC is not the one the encoder wrote."""
    if got != expected:
        raise SymbolMismatch(
            f"{where}decoded latents differ from the encoder's (symbols CRC {got:08x} != "
            f"{expected:08x}): the stream is corrupt or was made with other weights or an "
            f"incompatible codec version")

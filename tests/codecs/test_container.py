"""The .cfl container: round trip, crash safety (truncation, corruption), header errors."""

import struct

import msgpack
import pytest

from codecflow.codecs import container
from codecflow.data import FLAG_INTRA, FLAG_UNIT_END, Record
from codecflow.codecs.container import (FORMAT_VERSION, MAGIC, CflReader, CflWriter,
                                        encode_header)
from codecflow.errors import ContainerError

HEADER = {"codec": "jpeg", "codec_version": "1", "weights": "", "width": 64, "height": 48,
          "views": 1, "pix_fmt": "rgb24", "matrix": "bt709", "range": "full", "fps": 25.0,
          "unit_kind": "gop", "gop": 2, "q": 32}

# unit -> records; the last unit has two records so a cut inside it leaves it incomplete
UNITS = [
    [Record(0, FLAG_INTRA, b"intra-0" * 5, 0x11111111), Record(1, 0, b"p-1" * 3, 0x22222222)],
    [Record(2, FLAG_INTRA, b"intra-2" * 7, 0x33333333), Record(3, 0, b"p-3", 0x44444444)],
    [Record(4, FLAG_INTRA, bytes(range(200)), 0x55555555), Record(5, 0, b"p-5" * 9, 0x66)],
]


def write_stream(path, close=True):
    w = CflWriter(path, HEADER)
    for i, recs in enumerate(UNITS):
        n = w.write_unit(i, recs)
        assert n > sum(len(r.payload) for r in recs)
    if close:
        w.close()
    return w


def record_offsets(path):
    """Start offset of every record (coded and end) from the file bytes."""
    data = open(path, "rb").read()
    pos = len(encode_header(HEADER))
    out = []
    while pos < len(data):
        out.append(pos)
        (blen,) = struct.unpack_from("<I", data, pos)
        pos += 4 + blen + 4
    assert pos == len(data)
    return out


def read_all(path):
    with CflReader(path) as r:
        units = [(u, recs) for u, recs in r.units()]
        return r.header, units, r.status


def test_round_trip(tmp_path):
    p = tmp_path / "s.cfl"
    w = write_stream(p)
    assert w.bytes_written == p.stat().st_size
    header, units, status = read_all(p)
    assert header == HEADER
    assert status.complete and status.error is None and status.units == 3
    assert status.end == {"units": 3, "frames": 6}
    assert "complete" in status.describe()
    assert [u for u, _ in units] == [0, 1, 2]
    for (u, got), want in zip(units, UNITS):
        assert [(r.frame_index, r.payload, r.recon_crc) for r in got] == \
               [(r.frame_index, r.payload, r.recon_crc) for r in want]
        assert [r.flags & ~FLAG_UNIT_END for r in got] == [r.flags for r in want]
        assert got[-1].flags & FLAG_UNIT_END and not got[0].flags & FLAG_UNIT_END


def test_read_while_writing(tmp_path):
    p = tmp_path / "live.cfl"
    w = write_stream(p, close=False)
    header, units, status = read_all(p)
    assert len(units) == 3 and not status.complete and status.error is None
    assert "no end record" in status.describe()
    w.abort()


def test_truncated_at_every_offset_of_last_record(tmp_path):
    p = tmp_path / "s.cfl"
    write_stream(p)
    data = p.read_bytes()
    offs = record_offsets(p)
    assert len(offs) == 7  # 6 coded records + end record
    last, end = offs[5], offs[6]
    for cut in range(last, end):
        q = tmp_path / "cut.cfl"
        q.write_bytes(data[:cut])
        _, units, status = read_all(q)
        assert [u for u, _ in units] == [0, 1], cut
        assert status.units == 2 and not status.complete
        assert status.error, cut  # the cut unit is reported
    # cutting the end record keeps all three units, without claiming completeness
    for cut in range(end, len(data)):
        q = tmp_path / "cut.cfl"
        q.write_bytes(data[:cut])
        _, units, status = read_all(q)
        assert len(units) == 3 and not status.complete
        assert (status.error is None) == (cut == end)


def test_corrupt_byte_stops_with_error(tmp_path):
    p = tmp_path / "s.cfl"
    write_stream(p)
    orig = p.read_bytes()
    data = bytearray(orig)
    offs = record_offsets(p)
    data[offs[2] + 20] ^= 0xFF  # inside the payload of unit 1's first record
    p.write_bytes(bytes(data))
    _, units, status = read_all(p)
    assert [u for u, _ in units] == [0]
    assert not status.complete and "corrupt" in status.error
    # a corrupt length field
    data = bytearray(orig)
    data[offs[4]:offs[4] + 4] = struct.pack("<I", 2)
    p.write_bytes(bytes(data))
    _, units, status = read_all(p)
    assert len(units) == 2 and "corrupt" in status.error


def test_header_errors(tmp_path):
    p = tmp_path / "s.cfl"
    write_stream(p)
    data = p.read_bytes()
    bad = tmp_path / "bad.cfl"
    bad.write_bytes(b"NOTACFL!" + data[8:])
    with pytest.raises(ContainerError, match="magic"):
        CflReader(bad)
    bad.write_bytes(MAGIC + struct.pack("<H", FORMAT_VERSION + 1) + data[10:])
    with pytest.raises(ContainerError, match="version"):
        CflReader(bad)
    bad.write_bytes(data[:14])
    with pytest.raises(ContainerError, match="truncated"):
        CflReader(bad)
    blob = bytearray(data)
    blob[16] ^= 0x01  # inside the msgpack header
    bad.write_bytes(bytes(blob))
    with pytest.raises(ContainerError, match="corrupt"):
        CflReader(bad)
    with pytest.raises(ContainerError, match="no such file"):
        CflReader(tmp_path / "missing.cfl")
    with pytest.raises(ValueError, match="lacks"):
        encode_header({k: v for k, v in HEADER.items() if k != "fps"})


def test_unknown_record_type(tmp_path):
    p = tmp_path / "s.cfl"
    with open(p, "wb") as f:
        f.write(encode_header(HEADER))
        f.write(container.encode_record(container.REC_CODED, 0,
                                        Record(0, FLAG_INTRA | FLAG_UNIT_END, b"x", 1)))
        f.write(container.encode_record(9, 1, Record(1, 0, b"y", 2)))
    _, units, status = read_all(p)
    assert len(units) == 1 and "unknown record type" in status.error


def test_end_record_payload_is_msgpack(tmp_path):
    p = tmp_path / "s.cfl"
    write_stream(p)
    data = p.read_bytes()
    last = record_offsets(p)[-1]
    body = data[last + 4:-4]
    assert body[0] == container.REC_END
    assert msgpack.unpackb(body[container._BODY.size:]) == {"units": 3, "frames": 6}


def _v1_file(path, units, header=HEADER):
    """A container version 1 file, written byte by byte as that version specified."""
    import zlib

    blob = msgpack.packb(header, use_bin_type=True)
    out = bytearray(MAGIC + struct.pack("<HI", 1, len(blob)) + blob
                    + struct.pack("<I", zlib.crc32(blob)))
    for u, recs in enumerate(units):
        for i, r in enumerate(recs):
            flags = r.flags | (FLAG_UNIT_END if i == len(recs) - 1 else 0)
            body = struct.pack("<BBIII", container.REC_CODED, flags, u, r.frame_index,
                               r.recon_crc) + r.payload
            out += struct.pack("<I", len(body)) + body + struct.pack("<I", zlib.crc32(body))
    path.write_bytes(bytes(out))


def test_version_1_files_still_read(tmp_path):
    from codecflow.data import FLAG_VIEW_RIGHT

    p = tmp_path / "v1.cfl"
    units = [[Record(0, FLAG_INTRA, b"left", 1), Record(0, FLAG_VIEW_RIGHT, b"right", 2)]]
    _v1_file(p, units, {**HEADER, "views": 2, "unit_kind": "pair", "gop": 1})
    with CflReader(p) as r:
        got = list(r.units())
        assert r.version == 1
    (_, recs), = got
    assert [(x.payload, x.view, x.layer, x.recon_crc) for x in recs] == \
        [(b"left", 0, 0, 1), (b"right", 1, 0, 2)]


def test_records_carry_view_and_layer_and_reader_skips_layers(tmp_path):
    from codecflow.data import FLAG_BASE_LAYER, FLAG_ENH_LAYER

    p = tmp_path / "layers.cfl"
    w = CflWriter(p, {**HEADER, "views": 2, "unit_kind": "pair", "gop": 1})
    recs = [Record(0, FLAG_INTRA | FLAG_BASE_LAYER, b"base-L", 1, view=0, layer=0),
            Record(0, FLAG_ENH_LAYER, b"enh-L", 2, view=0, layer=1),
            Record(0, FLAG_BASE_LAYER, b"base-R", 3, view=1, layer=0),
            Record(0, FLAG_ENH_LAYER, b"enh-R", 4, view=1, layer=1)]
    w.write_unit(0, recs)
    w.close()
    with CflReader(p) as r:
        assert r.version == FORMAT_VERSION == 2
        (_, got), = list(r.units())
    assert [(x.view, x.layer, x.payload) for x in got] == [(x.view, x.layer, x.payload)
                                                            for x in recs]
    with CflReader(p) as r:
        (_, base), = list(r.units(max_layer=0))
        assert r.status.complete
    assert [x.payload for x in base] == [b"base-L", b"base-R"]
    with pytest.raises(ValueError, match="view 300"):
        container.encode_record(container.REC_CODED, 0, Record(0, 0, b"", 0, view=300))

"""Files crafted with valid CRCs: the reader checks order and counts instead of trusting them,
and no header or record content makes the decoder fail with anything but a project error."""

from __future__ import annotations

import random
import struct
import zlib

import msgpack
import numpy as np
import pytest

from codecflow.codecs import container
from codecflow.codecs.container import CflReader, CflWriter, stream_header
from codecflow.codecs.registry import create_codec
from codecflow.data import Frame, StreamInfo, Unit
from codecflow.errors import CodecflowError
from codecflow.stages.decode import decode_file

INFO = StreamInfo(16, 16, pix_fmt="rgb24", unit_kind="frame", fps=25.0)


@pytest.fixture(scope="module")
def real_file(tmp_path_factory):
    """A real 4-frame JPEG stream, as the sink writes it."""
    path = tmp_path_factory.mktemp("cfl") / "s.cfl"
    codec = create_codec("jpeg", q=30)
    w = CflWriter(path, stream_header(INFO, codec.header(), "s"))
    for i in range(4):
        frame = Frame.rgb(np.full((16, 16, 3), 40 * i, np.uint8))
        coded = codec.encode(Unit("frame", i, "s", [frame], INFO, first_frame=i, index=i))
        w.write_unit(i, coded.records)
    w.close(frames=4)
    return path.read_bytes()


def split(data: bytes):
    """-> (header map, [record bodies]) of a .cfl file."""
    pos = len(container.MAGIC)
    _, hlen = struct.unpack_from("<HI", data, pos)
    pos += 6
    header = msgpack.unpackb(data[pos:pos + hlen], raw=False)
    pos += hlen + 4
    bodies = []
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        bodies.append(bytearray(data[pos + 4:pos + 4 + n]))
        pos += 8 + n
    return header, bodies


def join(header, bodies, raw_header: bytes | None = None) -> bytes:
    blob = raw_header if raw_header is not None else msgpack.packb(header, use_bin_type=True)
    out = bytearray(container.MAGIC + struct.pack("<HI", container.FORMAT_VERSION, len(blob))
                    + blob + struct.pack("<I", zlib.crc32(blob)))
    for b in bodies:
        out += struct.pack("<I", len(b)) + bytes(b) + struct.pack("<I", zlib.crc32(bytes(b)))
    return bytes(out)


def read(tmp_path, data):
    p = tmp_path / "x.cfl"
    p.write_bytes(data)
    with CflReader(p) as r:
        units = [u for u, _ in r.units()]
        return units, r.status


def test_the_real_file_reads_complete(tmp_path, real_file):
    units, st = read(tmp_path, real_file)
    assert units == [0, 1, 2, 3] and st.complete and st.error is None


@pytest.mark.parametrize("change,kept,why", [
    (lambda b: [b[0], b[2], b[1], b[3], b[4]], [0], "unit 2 where unit 1 was expected"),
    (lambda b: [b[0], b[1], b[1], b[2], b[3], b[4]], [0, 1], "unit 1 where unit 2"),
    (lambda b: [b[0], b[1], b[3], b[4]], [0, 1], "unit 3 where unit 2"),
    (lambda b: [b[0], b[1], b[4]], [0, 1], "end record says 4 units"),
])
def test_units_swapped_repeated_removed_or_ended_early(tmp_path, real_file, change, kept, why):
    header, bodies = split(real_file)
    units, st = read(tmp_path, join(header, change(bodies)))
    assert units == kept and not st.complete and why in st.error


def test_renumbered_units_with_shifted_frames_are_caught(tmp_path, real_file):
    """Unit numbers made consecutive again after a removal: the frame indexes give it away."""
    header, bodies = split(real_file)
    bodies = [bodies[0], bodies[2], bodies[3], bodies[4]]
    for i, b in enumerate(bodies[:3]):
        struct.pack_into("<I", b, 2, i)  # unit field
    units, st = read(tmp_path, join(header, bodies))
    assert units == [0] and "starts at frame 2" in st.error


@pytest.mark.parametrize("key,value", [
    ("width", None), ("width", 0), ("views", 0), ("pix_fmt", "nv12"), ("q", 64), ("q", True),
    ("fps", "fast"), ("unit_kind", ["frame"]), ("gop", -1), ("codec", ""), ("stream", 5),
])
def test_bad_header_fields_are_named(tmp_path, real_file, key, value):
    header, bodies = split(real_file)
    header[key] = value
    p = tmp_path / "h.cfl"
    p.write_bytes(join(header, bodies))
    with pytest.raises(container.ContainerError, match=repr(key)):
        CflReader(p)


def test_header_not_a_map_and_missing_keys(tmp_path, real_file):
    header, bodies = split(real_file)
    for raw in (msgpack.packb([1, 2]), msgpack.packb({"codec": "jpeg"}), b"\xc1\xc1",
                msgpack.packb(header) + b"\x00"):
        p = tmp_path / "h.cfl"
        p.write_bytes(join(header, bodies, raw_header=raw))
        with pytest.raises(container.ContainerError):
            CflReader(p)


def _mutate(rng: random.Random, header: dict, bodies: list):
    """One random change, CRCs recomputed afterwards by `join`."""
    header, bodies = dict(header), [bytearray(b) for b in bodies]
    choice = rng.randrange(6)
    junk = [None, -1, 0, 2 ** 40, "x", "", [], {}, 1.5, True, b"\xff"]
    if choice == 0:
        header[rng.choice(sorted(header))] = rng.choice(junk)
    elif choice == 1:
        header.pop(rng.choice(sorted(header)))
    elif choice == 2 and bodies:
        b = rng.choice(bodies)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif choice == 3 and bodies:
        b = rng.choice(bodies)
        del b[rng.randrange(len(b)):]
    elif choice == 4 and bodies:
        bodies.insert(rng.randrange(len(bodies) + 1), bytearray(rng.choice(bodies)))
    else:
        i = rng.randrange(len(bodies))
        struct.pack_into("<B", bodies[i], 0, rng.choice([1, 2, 3, 255]))
    return header, bodies


def test_fuzzed_files_raise_only_project_errors(tmp_path, real_file):
    """A seeded mutator over a real file (CRCs recomputed): decoding ends cleanly or with a
    CodecflowError; never a KeyError, TypeError, msgpack or numpy error."""
    header, bodies = split(real_file)
    rng = random.Random(1234)
    p = tmp_path / "f.cfl"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        h, b = _mutate(rng, header, bodies)
        p.write_bytes(join(h, b))
        try:
            decode_file(str(p), None)
            outcomes["ok"] += 1
        except CodecflowError:
            outcomes["error"] += 1
    assert outcomes["error"] > 50 and outcomes["ok"] > 10, outcomes

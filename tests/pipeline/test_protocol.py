import msgpack
import numpy as np
import pytest
import zmq

from codecflow.data import CodedUnit, Frame, Record, StreamInfo, Unit
from codecflow.pipeline import protocol


CODEC = {"codec": "jpeg", "codec_version": "1", "weights": "", "q": 30}


def sample_unit():
    y = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)
    u = np.full((24, 32), 100, np.uint8)
    v = np.full((24, 32), 150, np.uint8)
    info = StreamInfo(64, 48, "yuv420p", 1, 30.0, "gop", 2)
    return Unit("gop", 7, "s", [Frame.yuv420(y, u, v), Frame.yuv420(y[::-1], u, v)], info,
                0.5, 10, 3, {"path": "x"})


def test_unit_roundtrip_over_real_sockets():
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://t1")
    b.connect("inproc://t1")
    unit = sample_unit()
    a.send_multipart(protocol.unit_to_msg(unit, 1.5), copy=False)
    frames = b.recv_multipart(copy=False)
    h = protocol.unpack_header(frames[0])
    got = protocol.unit_from_msg(h, frames[1:])
    assert (got.seq, got.stream, got.first_frame, got.index, got.kind) == (7, "s", 10, 3, "gop")
    for f0, f1 in zip(unit.frames, got.frames):
        for p0, p1 in zip(f0.planes, f1.planes):
            np.testing.assert_array_equal(p0, p1)
    assert h["t_read"] == 1.5
    a.close()
    b.close()


def test_planes_are_raw_buffers_not_pickle():
    msg = protocol.unit_to_msg(sample_unit(), 0.0)
    assert len(msg) == 1 + 6  # header + 3 planes x 2 frames
    assert bytes(memoryview(msg[1])) == sample_unit().frames[0].planes[0].tobytes()
    h = msgpack.unpackb(msg[0])
    assert h["v"] == protocol.VERSION and h["kind"] == "unit"


def test_coded_roundtrip_with_recon():
    unit = sample_unit()
    coded = CodedUnit("gop", 7, "s", [Record(10, 1, b"abc", 5), Record(11, 0, b"de", 6)],
                      unit.frames, unit.info, 10, 3)
    row = {k: 1.0 for k in ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "psnr_rgb")}
    msg = protocol.coded_to_msg(coded, {"metrics": [row], "codec": CODEC}, with_recon=True)
    h = protocol.unpack_header(msg[0])
    got = protocol.coded_from_msg(h, msg[1:])
    assert [r.payload for r in got.records] == [b"abc", b"de"]
    assert [r.recon_crc for r in got.records] == [5, 6]
    assert len(got.recon) == 2 and h["metrics"][0]["psnr_y"] == 1.0


def test_unknown_version_rejected_clearly():
    blob = msgpack.packb({"v": 99, "kind": "unit"})
    with pytest.raises(protocol.ProtocolError, match="version 99 is not supported"):
        protocol.unpack_header(blob)


def test_garbage_header_rejected():
    with pytest.raises(protocol.ProtocolError):
        protocol.unpack_header(b"\xff\x00garbage")


def test_plane_size_mismatch():
    msg = protocol.unit_to_msg(sample_unit(), 0.0)
    h = protocol.unpack_header(msg[0])
    with pytest.raises(protocol.ProtocolError, match="plane"):
        protocol.unit_from_msg(h, [b"short"] + msg[2:])

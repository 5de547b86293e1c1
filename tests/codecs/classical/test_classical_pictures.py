"""JPEG, WebP and x265-intra: round trips, q monotonicity, CRCs, corrupt payloads."""

import pytest

from tests.conftest import synth_rgb
from codecflow.codecs import colour, metrics
from codecflow.data import FLAG_INTRA, FLAG_VIEW_RIGHT, Frame, Record, StreamInfo, Unit, frames_crc32
from codecflow.codecs.base import pack_views, unpack_views
from codecflow.codecs.registry import create_codec
from codecflow.codecs.classical.quality import crf, picture_quality
from codecflow.codecs.decoding import decode_checked
from codecflow.errors import CodecError

PICTURE_CODECS = ["jpeg", "webp", "x265-intra"]


def make_frame(fmt, w, h, info, seed=0, shift=0):
    rgb = synth_rgb(w, h, seed, shift)
    return Frame.rgb(rgb) if fmt == "rgb24" else colour.rgb_to_i420(rgb, info.matrix, info.range)


def stream(fmt, w, h, kind="frame"):
    return StreamInfo(w, h, pix_fmt=fmt, unit_kind=kind,
                      range="full" if fmt == "rgb24" else "limited")


def psnr_rgb(ref, rec, info):
    return metrics.frame_psnr(ref, rec, info.matrix, info.range)["psnr_rgb"]


def test_quality_mapping():
    qs = list(range(64))
    quality = [picture_quality(q) for q in qs]
    assert quality[0] == 1 and quality[32] == 51 and quality[63] == 100
    assert all(b > a for a, b in zip(quality, quality[1:]))
    crfs = [crf(q) for q in qs]
    assert crfs[0] == 51.0 and crfs[63] == 0.0 and abs(crfs[32] - 25.1) < 0.01
    assert all(b < a for a, b in zip(crfs, crfs[1:]))
    with pytest.raises(CodecError):
        picture_quality(64)


@pytest.mark.parametrize("name", PICTURE_CODECS)
@pytest.mark.parametrize("fmt", ["rgb24", "yuv420p"])
@pytest.mark.parametrize("size", [(96, 64), (97, 61)])
def test_frame_round_trip(name, fmt, size):
    w, h = size
    info = stream(fmt, w, h)
    src = make_frame(fmt, w, h, info)
    codec = create_codec(name, q=40)
    coded = codec.encode(Unit("frame", 3, "s", [src], info, first_frame=3, index=3))
    assert len(coded.records) == 1 and len(coded.recon) == 1
    rec = coded.records[0]
    assert rec.frame_index == 3 and rec.flags & FLAG_INTRA
    out = coded.recon[0]
    assert out.fmt == fmt and (out.width, out.height) == (w, h)
    assert [p.shape for p in out.planes] == [p.shape for p in src.planes]
    assert rec.recon_crc == out.crc32()
    # a separate decoder instance (as the decode stage makes from the .cfl header)
    dec = create_codec(name, q=40)
    got = decode_checked(dec, coded.records, info, "frame")
    assert got[0].crc32() == out.crc32()
    assert psnr_rgb(src, out, info) > 26.0


@pytest.mark.parametrize("name", PICTURE_CODECS)
def test_pair_and_gop_units(name):
    w, h = 64, 48
    info = stream("rgb24", w, h, "pair")
    left, right = (make_frame("rgb24", w, h, info, seed=s, shift=s * 3) for s in (1, 2))
    codec = create_codec(name, q=36)
    coded = codec.encode(Unit("pair", 0, "s", [left, right], info))
    # one record per view, same frame index, the right view flagged
    assert [(r.frame_index, r.view, bool(r.flags & FLAG_VIEW_RIGHT)) for r in coded.records] \
        == [(0, 0, False), (0, 1, True)] and len(coded.recon) == 2
    views = decode_checked(create_codec(name, q=36), coded.records, info, "pair")
    assert [v.crc32() for v in views] == [v.crc32() for v in coded.recon]
    # container version 1 held both views in one record (pack_views): still decodes
    packed = Record(0, FLAG_INTRA, pack_views([r.payload for r in coded.records]),
                    frames_crc32(coded.recon))
    assert len(unpack_views(packed.payload, 2)) == 2
    views = decode_checked(create_codec(name, q=36), [packed], info, "pair")
    assert [v.crc32() for v in views] == [v.crc32() for v in coded.recon]

    ginfo = stream("yuv420p", w, h, "gop")
    frames = [make_frame("yuv420p", w, h, ginfo, shift=i) for i in range(3)]
    coded = codec.encode(Unit("gop", 1, "s", frames, ginfo, first_frame=6))
    assert [r.frame_index for r in coded.records] == [6, 7, 8]
    assert all(r.flags & FLAG_INTRA for r in coded.records)
    out = decode_checked(create_codec(name, q=36), coded.records, ginfo, "gop")
    assert len(out) == 3


@pytest.mark.parametrize("name", PICTURE_CODECS)
def test_q_monotone(name):
    w, h = 128, 96
    info = stream("rgb24", w, h)
    src = make_frame("rgb24", w, h, info, seed=5)
    sizes, psnrs = [], []
    for q in (10, 30, 50):
        coded = create_codec(name, q=q).encode(Unit("frame", 0, "s", [src], info))
        sizes.append(coded.payload_bytes)
        psnrs.append(psnr_rgb(src, coded.recon[0], info))
    assert sizes[0] < sizes[1] < sizes[2], sizes
    assert psnrs[0] < psnrs[1] < psnrs[2], psnrs


@pytest.mark.parametrize("name", PICTURE_CODECS)
def test_corrupt_payload(name):
    w, h = 64, 48
    info = stream("rgb24", w, h)
    codec = create_codec(name, q=30)
    with pytest.raises(CodecError):
        codec.decode_picture(b"\x00\x01garbage" * 10, info)
    with pytest.raises(CodecError):
        codec.decode_picture(b"", info)
    src = make_frame("rgb24", w, h, info)
    coded = codec.encode(Unit("frame", 0, "s", [src], info))
    payload = coded.records[0].payload
    # wrong stream size: a clear error, never a silently wrong picture
    with pytest.raises(CodecError, match=f"{w + 2}x{h}"):
        codec.decode_picture(payload, stream("rgb24", w + 2, h))
    # truncated payload: decode error or CRC mismatch (both CodecError)
    rec = coded.records[0]
    rec.payload = payload[: len(payload) // 2]
    with pytest.raises(CodecError):
        decode_checked(codec, [rec], info, "frame")


def test_unknown_param():
    for name in PICTURE_CODECS:
        with pytest.raises(CodecError, match="unknown parameter"):
            create_codec(name, q=30, bogus=1)


def test_x265_intra_444_and_420():
    w, h = 65, 47
    info = stream("rgb24", w, h)
    src = make_frame("rgb24", w, h, info)
    c444 = create_codec("x265-intra", q=50)
    c420 = create_codec("x265-intra", q=50, chroma="420")
    p444 = c444.encode(Unit("frame", 0, "s", [src], info))
    p420 = c420.encode(Unit("frame", 0, "s", [src], info))
    # 4:4:4 keeps the saturated edges: clearly better RGB PSNR at the same q
    assert psnr_rgb(src, p444.recon[0], info) > psnr_rgb(src, p420.recon[0], info) + 1.0
    # the decoder follows the payload, whatever its own chroma setting
    decode_checked(c444, p420.records, info, "frame")
    decode_checked(c420, p444.records, info, "frame")
    with pytest.raises(CodecError):
        create_codec("x265-intra", q=5, chroma="422")


def test_jpeg_yuv_payload_is_plain_jpeg():
    info = stream("yuv420p", 64, 48)
    src = make_frame("yuv420p", 64, 48, info)
    coded = create_codec("jpeg", q=32).encode(Unit("frame", 0, "s", [src], info))
    assert coded.records[0].payload[:2] == b"\xff\xd8"
    coded = create_codec("webp", q=32).encode(Unit("frame", 0, "s", [src], info))
    assert coded.records[0].payload[:4] == b"RIFF" and coded.records[0].payload[8:12] == b"WEBP"

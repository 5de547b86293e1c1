"""x264 / x265 closed GOPs: records, flags, CRCs, odd sizes, corrupt payloads."""

import numpy as np
import pytest

from tests.conftest import synth_rgb
from codecflow.codecs import colour, metrics
from codecflow.data import FLAG_INTRA, Frame, Record, StreamInfo, Unit
from codecflow.codecs.registry import create_codec
from codecflow.codecs.classical import pyav_codecs
from codecflow.codecs.decoding import decode_checked
from codecflow.errors import CodecError

GOP_CODECS = ["x264", "x265"]


def gop_frames(fmt, w, h, info, n=4):
    out = []
    for i in range(n):
        rgb = synth_rgb(w, h, seed=0, shift=2 * i)
        out.append(Frame.rgb(rgb) if fmt == "rgb24"
                   else colour.rgb_to_i420(rgb, info.matrix, info.range))
    return out


def stream(fmt, w, h, gop=4):
    return StreamInfo(w, h, pix_fmt=fmt, unit_kind="gop", gop=gop, fps=25.0,
                      range="full" if fmt == "rgb24" else "limited")


@pytest.mark.parametrize("name", GOP_CODECS)
@pytest.mark.parametrize("fmt", ["yuv420p", "rgb24"])
@pytest.mark.parametrize("size", [(96, 64), (97, 61)])
def test_gop_round_trip(name, fmt, size):
    w, h = size
    info = stream(fmt, w, h)
    frames = gop_frames(fmt, w, h, info)
    codec = create_codec(name, q=44)
    coded = codec.encode(Unit("gop", 2, "s", frames, info, first_frame=8, index=2))
    assert [r.frame_index for r in coded.records] == [8, 9, 10, 11]
    assert [bool(r.flags & FLAG_INTRA) for r in coded.records] == [True, False, False, False]
    assert len(coded.recon) == 4
    for src, rec, r in zip(frames, coded.recon, coded.records):
        assert rec.fmt == fmt and (rec.width, rec.height) == (w, h)
        assert [p.shape for p in rec.planes] == [p.shape for p in src.planes]
        assert r.recon_crc == rec.crc32()
        m = metrics.frame_psnr(src, rec, info.matrix, info.range)
        assert m["psnr_y"] > 30.0, m
    out = decode_checked(create_codec(name, q=44), coded.records, info, "gop")
    assert [f.crc32() for f in out] == [f.crc32() for f in coded.recon]
    # P frames are much smaller than the IDR on this slowly moving content
    sizes = [len(r.payload) for r in coded.records]
    assert max(sizes[1:]) < sizes[0]


@pytest.mark.parametrize("name", GOP_CODECS)
def test_keyframe_has_parameter_sets_and_no_sei(name):
    info = stream("yuv420p", 64, 48)
    coded = create_codec(name, q=30).encode(Unit("gop", 0, "s", gop_frames("yuv420p", 64, 48,
                                                                            info), info))
    first = coded.records[0].payload
    nal_types = []
    for _, s, e in pyav_codecs._nal_units(first):
        b = first[s]
        nal_types.append(b & 0x1F if name == "x264" else (b >> 1) & 0x3F)
    if name == "x264":
        assert {7, 8, 5} <= set(nal_types) and 6 not in nal_types  # SPS, PPS, IDR, no SEI
    else:
        assert {32, 33, 34} <= set(nal_types) and not {39, 40} & set(nal_types)
    assert b"x264 - core" not in first


def test_strip_sei():
    sps = b"\x00\x00\x00\x01\x67\x64\x00\x0a"
    sei = b"\x00\x00\x01\x06\x05\x10abcdefgh"
    idr = b"\x00\x00\x01\x65\x88\x84"
    data = sps + sei + idr
    assert pyav_codecs.strip_sei(data, pyav_codecs._h264_is_sei) == sps + idr
    assert pyav_codecs.strip_sei(sps + idr, pyav_codecs._h264_is_sei) == sps + idr
    assert pyav_codecs.strip_sei(b"no start code", pyav_codecs._h264_is_sei) == b"no start code"


@pytest.mark.parametrize("name", GOP_CODECS)
def test_q_monotone(name):
    w, h = 128, 96
    info = stream("yuv420p", w, h, gop=3)
    frames = gop_frames("yuv420p", w, h, info, n=3)
    sizes, psnrs = [], []
    for q in (10, 30, 50):
        coded = create_codec(name, q=q).encode(Unit("gop", 0, "s", frames, info))
        sizes.append(coded.payload_bytes)
        psnrs.append(np.mean([metrics.frame_psnr(a, b)["psnr_yuv"]
                              for a, b in zip(frames, coded.recon)]))
    assert sizes[0] < sizes[1] < sizes[2], sizes
    assert psnrs[0] < psnrs[1] < psnrs[2], psnrs


@pytest.mark.parametrize("name", GOP_CODECS)
def test_gop_of_one_and_independent_gops(name):
    info = stream("yuv420p", 64, 48, gop=2)
    frames = gop_frames("yuv420p", 64, 48, info, n=4)
    codec = create_codec(name, q=32)
    a = codec.encode(Unit("gop", 0, "s", frames[:2], info))
    b = codec.encode(Unit("gop", 1, "s", frames[2:], info, first_frame=2))
    # the second GOP decodes alone (fresh decoder, in-band parameter sets)
    decode_checked(create_codec(name, q=32), b.records, info, "gop")
    decode_checked(create_codec(name, q=32), a.records, info, "gop")
    one = codec.encode(Unit("gop", 0, "s", frames[:1], info))
    assert len(one.records) == 1 and one.records[0].flags & FLAG_INTRA


@pytest.mark.parametrize("name", GOP_CODECS)
def test_errors(name):
    info = stream("yuv420p", 64, 48)
    frames = gop_frames("yuv420p", 64, 48, info)
    codec = create_codec(name, q=30)
    with pytest.raises(CodecError, match="gop"):
        codec.encode(Unit("frame", 0, "s", frames[:1], info))
    with pytest.raises(CodecError, match="unknown parameter"):
        create_codec(name, q=30, bogus=1)
    coded = codec.encode(Unit("gop", 0, "s", frames, info))
    # garbage payloads
    bad = [Record(r.frame_index, r.flags, b"\x00\x00\x01garbage" * 4, r.recon_crc)
           for r in coded.records]
    with pytest.raises(CodecError):
        codec.decode(bad, info, "gop")
    with pytest.raises(CodecError):
        codec.decode([Record(0, FLAG_INTRA, b"", 0)], info, "gop")
    # a stream of another size
    with pytest.raises(CodecError, match="expected"):
        codec.decode(coded.records, stream("yuv420p", 80, 48), "gop")
    # truncated keyframe / corrupt P frame: decode error or CRC mismatch, never silence
    recs = [Record(r.frame_index, r.flags, r.payload, r.recon_crc) for r in coded.records]
    recs[0].payload = recs[0].payload[: len(recs[0].payload) // 3]
    with pytest.raises(CodecError):
        decode_checked(codec, recs, info, "gop")
    recs = [Record(r.frame_index, r.flags, r.payload, r.recon_crc) for r in coded.records]
    p = bytearray(recs[2].payload)
    for i in range(len(p) // 2, len(p)):
        p[i] ^= 0x5A
    recs[2].payload = bytes(p)
    with pytest.raises(CodecError):
        decode_checked(codec, recs, info, "gop")
    with pytest.raises(CodecError, match="pair"):
        decode_checked(codec, coded.records[:1], info, "pair")

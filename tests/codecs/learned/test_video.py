"""learned-video: GOP round trips (exact), the first frame as learned-intra, P-frames against
the previous decoded frame, damaged or incomplete GOPs, parameters."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codecflow.codecs import colour  # noqa: E402
from codecflow.codecs.decoding import decode_checked  # noqa: E402
from codecflow.codecs.registry import check_views, create_codec  # noqa: E402
from codecflow.data import Frame, Record, StreamInfo, Unit  # noqa: E402
from codecflow.errors import CodecError  # noqa: E402
from tests.conftest import synth_rgb  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from codecflow.codecs.learned.conditional import build_coder
    from codecflow.codecs.learned.model import build_model
    from codecflow.codecs.learned.weights import save_weights

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("w")
    intra = save_weights(build_model({"N": 32, "M": 48}).eval(), folder / "learned_intra.pt",
                         {"data": ["random init (tests)"]})
    coder = build_coder({"M": 48, "C": 48, "N": 16, "F": 16,
                         "base": {"codec": "learned-intra", "sha256": intra["sha256"]}})
    save_weights(coder.eval(), folder / "learned_video.pt", {"data": ["random init"]},
                 codec="learned-video")
    return folder


def _codec(weights, **kw):
    return create_codec("learned-video", q=kw.pop("q", 30),
                        weights=str(weights / "learned_video.pt"),
                        intra_weights=str(weights / "learned_intra.pt"), **kw)


def _gop(w, h, n, pix_fmt="yuv420p", first=0):
    info = StreamInfo(width=w, height=h, pix_fmt=pix_fmt, unit_kind="gop", gop=n)
    rgbs = [synth_rgb(w, h, seed=2, shift=3 * i) for i in range(n)]
    frames = [Frame.rgb(v) if pix_fmt == "rgb24" else colour.rgb_to_i420(v, info.matrix,
                                                                            info.range)
              for v in rgbs]
    return Unit("gop", 0, "s", frames, info, first_frame=first, index=0), info


@pytest.mark.parametrize("w,h,n", [(97, 61, 4), (64, 64, 8), (8, 8, 2)])
def test_gop_round_trip_is_exact(weights, w, h, n):
    codec = _codec(weights)
    unit, info = _gop(w, h, n)
    coded = codec.encode(unit)
    assert [r.frame_index for r in coded.records] == list(range(n))
    assert coded.records[0].payload[0] == 0x4C and coded.records[0].flags & 1
    assert all(r.payload[0] == 0x56 and not r.flags & 1 for r in coded.records[1:])
    got = decode_checked(codec, coded.records, info, "gop")
    assert all(np.array_equal(p, q) for a, b in zip(got, coded.recon)
               for p, q in zip(a.planes, b.planes))


def test_first_frame_decodes_as_learned_intra(weights):
    unit, info = _gop(64, 48, 3, "rgb24", first=16)
    coded = _codec(weights).encode(unit)
    intra = create_codec("learned-intra", q=30, weights=str(weights / "learned_intra.pt"))
    alone = decode_checked(intra, coded.records[:1], info, "frame")
    assert np.array_equal(alone[0].planes[0], coded.recon[0].planes[0])
    assert coded.records[2].frame_index == 18


def test_incomplete_or_damaged_gops_are_errors(weights):
    codec = _codec(weights)
    unit, info = _gop(64, 48, 3)
    recs = codec.encode(unit).records
    with pytest.raises(CodecError, match="without the frame before it"):
        codec.decode([recs[0], recs[2]], info)
    with pytest.raises(CodecError, match="without the frame before it"):
        codec.decode(recs[1:], info)
    bad = bytearray(recs[1].payload)
    bad[-2] ^= 0x55
    with pytest.raises(CodecError, match="corrupt"):
        codec.decode([recs[0], Record(1, 0, bytes(bad), recs[1].recon_crc)], info)
    other = StreamInfo(width=64, height=50, pix_fmt="yuv420p", unit_kind="gop", gop=3)
    with pytest.raises(CodecError, match="frame 0: learned-intra payload holds a 64x48 picture, "
                                         "the stream is 64x50"):
        codec.decode(recs, other)  # refused before the GOP's first picture is decoded


def test_parameters_and_stereo_sources(weights):
    with pytest.raises(CodecError, match="unknown parameter"):
        _codec(weights, first_view="left")
    with pytest.raises(CodecError, match="cannot code the stereo|codes one view"):
        check_views("learned-video", 2)

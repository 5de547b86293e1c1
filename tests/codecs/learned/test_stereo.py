"""learned-stereo: pair round trips (exact), the first view as learned-intra, either view
first, grey pairs, damaged and incomplete units, and the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codecflow.codecs import colour  # noqa: E402
from codecflow.codecs.decoding import decode_checked  # noqa: E402
from codecflow.codecs.registry import create_codec, check_views  # noqa: E402
from codecflow.data import Frame, Record, StreamInfo, Unit  # noqa: E402
from codecflow.errors import CodecError  # noqa: E402
from tests.conftest import synth_rgb  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random intra and stereo weights saved like shipped ones (manifest, base sha)."""
    from codecflow.codecs.learned.conditional import build_coder
    from codecflow.codecs.learned.model import build_model
    from codecflow.codecs.learned.weights import save_weights

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("w")
    intra = save_weights(build_model({"N": 32, "M": 48}).eval(), folder / "learned_intra.pt",
                         {"data": ["random init (tests)"]})
    coder = build_coder({"M": 48, "C": 48, "N": 16, "F": 16,
                         "base": {"codec": "learned-intra", "sha256": intra["sha256"]}})
    save_weights(coder.eval(), folder / "learned_stereo.pt", {"data": ["random init"]},
                 codec="learned-stereo")
    return folder


def _codec(weights, **kw):
    return create_codec("learned-stereo", q=kw.pop("q", 30),
                        weights=str(weights / "learned_stereo.pt"),
                        intra_weights=str(weights / "learned_intra.pt"), **kw)


def _pair(w, h, pix_fmt="rgb24", grey=False, exposure=None):
    views = [synth_rgb(w, h, seed=1), synth_rgb(w, h, seed=1, shift=6)]
    if exposure is not None:  # the second camera darker, with another white balance
        views[1] = np.clip(views[1] * np.float32(exposure) - 6, 0, 255).astype(np.uint8)
    if grey:
        views = [np.repeat(v[..., :1], 3, axis=2) for v in views]
    info = StreamInfo(width=w, height=h, pix_fmt=pix_fmt, views=2)
    if pix_fmt == "rgb24":
        frames = [Frame.rgb(v) for v in views]
    else:
        frames = [colour.rgb_to_i420(v, info.matrix, info.range) for v in views]
    return Unit("pair", 0, "s", frames, info), info


@pytest.mark.parametrize("w,h", [(97, 61), (130, 70), (8, 8)])
def test_pair_round_trip_is_exact(weights, w, h):
    codec = _codec(weights)
    unit, info = _pair(w, h)
    coded = codec.encode(unit)
    assert [r.view for r in coded.records] == [0, 1]
    assert coded.records[0].payload[0] == 0x4C and coded.records[1].payload[0] == 0x53
    got = decode_checked(codec, coded.records, info, "pair")
    assert all(np.array_equal(a.planes[0], b.planes[0]) for a, b in zip(got, coded.recon))
    assert got[1].planes[0].shape == (h, w, 3)


def test_photometric_compensation_round_trip():
    from codecflow.codecs.learned.stereo import (compensate, pack_photometric,
                                                 photometric_fit, unpack_photometric)

    ref = synth_rgb(64, 48, seed=3)
    target = np.clip(ref * np.float32([0.7, 0.8, 0.9]) + 10, 0, 255).astype(np.uint8)
    params = photometric_fit(ref, target)
    assert params is not None
    moved = compensate(ref, params)
    err = np.abs(moved.astype(int) - target.astype(int)).mean()
    assert err < 0.25 * np.abs(ref.astype(int) - target.astype(int)).mean()
    got, rest = unpack_photometric(pack_photometric(params) + b"xy")
    assert got == params and rest == b"xy"
    assert photometric_fit(ref, ref) is None  # the identity is not signalled


def test_pair_with_an_exposure_difference_uses_compensation(weights):
    codec = _codec(weights)
    unit, info = _pair(96, 64, exposure=[0.6, 0.7, 0.8])
    coded = codec.encode(unit)
    got = decode_checked(codec, coded.records, info, "pair")
    assert all(np.array_equal(a.planes[0], b.planes[0]) for a, b in zip(got, coded.recon))
    # the encoder keeps the smaller coding; either way it decodes exactly. Forced on:
    from codecflow.codecs.learned.stereo import FLAG_PHOTOMETRIC, decode_second, encode_pair

    left, right = (f.planes[0] for f in unit.frames)
    p1, p2, pic1, pic2 = encode_pair(codec.intra, codec.coder, left, right, 30, 0,
                                     ((True, 1.0),))
    assert p2[3] & FLAG_PHOTOMETRIC
    assert np.array_equal(decode_second(codec.intra, codec.coder, p2, pic1), pic2)


def test_first_view_is_a_learned_intra_picture(weights):
    codec = _codec(weights)
    unit, info = _pair(64, 48)
    coded = codec.encode(unit)
    intra = create_codec("learned-intra", q=30, weights=str(weights / "learned_intra.pt"))
    alone = decode_checked(intra, coded.records[:1], info, "frame")
    assert np.array_equal(alone[0].planes[0], coded.recon[0].planes[0])


def test_right_view_first(weights):
    codec = _codec(weights, first_view="right", fast=True)
    unit, info = _pair(72, 40, pix_fmt="yuv420p")
    coded = codec.encode(unit)
    assert coded.records[1].payload[0] == 0x4C and coded.records[0].payload[0] == 0x53
    assert coded.records[0].payload[4] == 1  # coded against view 1
    got = decode_checked(codec, coded.records, info, "pair")
    assert all(np.array_equal(p, q) for a, b in zip(got, coded.recon)
               for p, q in zip(a.planes, b.planes))


def test_grey_pair_decodes_grey(weights):
    codec = _codec(weights)
    unit, info = _pair(64, 40, grey=True)
    got = decode_checked(codec, codec.encode(unit).records, info, "pair")
    for f in got:
        rgb = f.planes[0]
        assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1],
                                                                         rgb[..., 2])


def test_damaged_or_incomplete_units_are_errors(weights):
    codec = _codec(weights)
    unit, info = _pair(64, 40)
    recs = codec.encode(unit).records
    with pytest.raises(CodecError, match="view 0"):
        codec.decode([recs[1]], info)
    bad = bytearray(recs[1].payload)
    bad[-3] ^= 0xFF
    with pytest.raises(CodecError, match="corrupt"):
        codec.decode([recs[0], Record(0, 0, bytes(bad), recs[1].recon_crc, 1)], info)


def test_bad_parameters_and_mono_sources(weights, tmp_path):
    with pytest.raises(CodecError, match="first_view"):
        _codec(weights, first_view="up")
    with pytest.raises(CodecError, match="unknown parameter"):
        _codec(weights, gain=2)
    with pytest.raises(CodecError, match="fast must be"):
        _codec(weights, fast="yes")
    with pytest.raises(CodecError, match="stereo pairs"):
        check_views("learned-stereo", 1)
    with pytest.raises(CodecError, match="not found"):
        create_codec("learned-stereo", weights=str(tmp_path / "none.pt"),
                     intra_weights=str(weights / "learned_intra.pt"))


def test_stereo_weights_must_match_their_intra_weights(weights, tmp_path):
    from codecflow.codecs.learned.model import build_model
    from codecflow.codecs.learned.weights import save_weights

    torch.manual_seed(5)
    other = tmp_path / "learned_intra.pt"
    save_weights(build_model({"N": 32, "M": 48}).eval(), other, {"data": ["other"]})
    with pytest.raises(CodecError, match="trained on learned-intra weights"):
        create_codec("learned-stereo", weights=str(weights / "learned_stereo.pt"),
                     intra_weights=str(other))

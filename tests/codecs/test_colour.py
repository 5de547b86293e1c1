"""Colour conversion: round-trip tolerances, known values, odd sizes."""

import numpy as np
import pytest

from codecflow.codecs import colour, metrics
from codecflow.data import Frame
from codecflow.errors import ConfigError


def smooth_rgb(w=96, h=64):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(xx / 17.0 + yy / 29.0),
                    128 + 90 * np.cos(yy / 13.0 - xx / 41.0),
                    30 + 190 * (xx + yy) / (w + h)], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("rng", ["limited", "full"])
def test_i420_round_trip(matrix, rng):
    rgb = smooth_rgb()
    f = colour.rgb_to_i420(rgb, matrix, rng)
    assert f.fmt == "yuv420p" and [p.shape for p in f.planes] == [(64, 96), (32, 48), (32, 48)]
    back = colour.i420_to_rgb(f, matrix, rng)
    assert back.dtype == np.uint8 and back.shape == rgb.shape
    assert metrics.psnr(rgb, back) > 35.0


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("rng", ["limited", "full"])
def test_yuv444_round_trip(matrix, rng):
    rgb = np.random.default_rng(1).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    yuv = colour.rgb_to_yuv444(rgb, matrix, rng)
    back = colour.yuv444_to_rgb(yuv, matrix, rng)
    assert np.abs(back.astype(int) - rgb).max() <= 1
    # 8-bit rounding of the YCbCr planes costs little (x265-intra's 4:4:4 path)
    back8 = colour.yuv444_to_rgb(np.rint(yuv), matrix, rng)
    assert metrics.psnr(rgb, back8) > 45.0


def test_known_values():
    px = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], dtype=np.uint8)
    lim = colour.rgb_to_yuv444(px, "bt709", "limited")
    full = colour.rgb_to_yuv444(px, "bt709", "full")
    np.testing.assert_allclose(lim[0, 0], [235, 128, 128], atol=1e-3)
    np.testing.assert_allclose(lim[0, 1], [16, 128, 128], atol=1e-3)
    np.testing.assert_allclose(full[0, 0], [255, 128, 128], atol=1e-3)
    np.testing.assert_allclose(full[0, 1], [0, 128, 128], atol=1e-3)
    # pure red: Cr at its maximum, Y = Kr
    np.testing.assert_allclose(lim[0, 2], [16 + 219 * 0.2126, 128 - 112 * 0.2126 / 0.9278,
                                           240], atol=1e-2)
    np.testing.assert_allclose(colour.rgb_to_yuv444(px, "bt601", "full")[0, 2, 0],
                               0.299 * 255, atol=1e-3)


def test_odd_sizes():
    rgb = smooth_rgb(97, 61)
    f = colour.rgb_to_i420(rgb, "bt709", "limited")
    assert [p.shape for p in f.planes] == [(61, 97), (31, 49), (31, 49)]
    back = colour.to_rgb(f, "bt709", "limited")
    assert back.shape == (61, 97, 3)
    assert metrics.psnr(rgb, back) > 35.0


def test_dispatch_helpers():
    rgb = smooth_rgb(32, 16)
    fr = Frame.rgb(rgb)
    assert colour.to_rgb(fr) is fr.planes[0]
    f420 = colour.to_i420(fr, "bt709", "full")
    assert colour.to_i420(f420) is f420
    assert colour.like(rgb, "rgb24", "bt709", "full").fmt == "rgb24"
    assert colour.like(rgb, "yuv420p", "bt709", "full").fmt == "yuv420p"


def test_bad_names():
    rgb = smooth_rgb(8, 8)
    with pytest.raises(ConfigError, match="matrix"):
        colour.rgb_to_yuv444(rgb, "bt2020", "limited")
    with pytest.raises(ConfigError, match="range"):
        colour.rgb_to_yuv444(rgb, "bt709", "studio")

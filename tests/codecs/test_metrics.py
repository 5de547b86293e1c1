"""PSNR definitions (docs/stats.md)."""

import math

import numpy as np
import pytest

from codecflow.codecs import colour, metrics
from codecflow.data import Frame


def test_identical_is_capped():
    a = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    assert metrics.psnr(a, a.copy()) == metrics.PSNR_CAP == 100.0
    f = Frame.rgb(np.zeros((4, 6, 3), np.uint8))
    m = metrics.frame_psnr(f, f)
    assert all(v == 100.0 for v in m.values())


def test_known_mse():
    a = np.zeros((10, 10), np.uint8)
    b = np.full((10, 10), 2, np.uint8)  # MSE 4
    assert metrics.mse(a, b) == 4.0
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 4))
    c = a.copy()
    c[0, :] = 10  # 10 of 100 pixels off by 10: MSE = 10 * 100 / 100
    assert metrics.mse(a, c) == pytest.approx(10.0)
    assert metrics.psnr_from_mse(10.0) == pytest.approx(38.1308, abs=1e-3)
    # no wrap-around on uint8 differences
    assert metrics.mse(np.array([0], np.uint8), np.array([255], np.uint8)) == 255.0 ** 2


def test_yuv_weighting():
    h, w = 8, 8
    y = np.full((h, w), 100, np.uint8)
    u = np.full((h // 2, w // 2), 120, np.uint8)
    v = np.full((h // 2, w // 2), 140, np.uint8)
    ref = Frame.yuv420(y, u, v)
    rec = Frame.yuv420(y + 1, u + 2, v + 4)
    m = metrics.frame_psnr(ref, rec)
    py, pu, pv = (10 * math.log10(255 ** 2 / e) for e in (1, 4, 16))
    assert m["psnr_y"] == pytest.approx(py)
    assert m["psnr_u"] == pytest.approx(pu)
    assert m["psnr_v"] == pytest.approx(pv)
    assert m["psnr_yuv"] == pytest.approx((6 * py + pu + pv) / 8)
    assert 0 < m["psnr_rgb"] < 100


def test_rgb_source_and_mismatch():
    rgb = np.random.default_rng(2).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    noisy = np.clip(rgb.astype(int) + 3, 0, 255).astype(np.uint8)
    m = metrics.frame_psnr(Frame.rgb(rgb), Frame.rgb(noisy), "bt709", "full")
    assert m["psnr_rgb"] == pytest.approx(metrics.psnr(rgb, noisy))
    # an I420 reconstruction of an RGB source is measured in RGB
    m2 = metrics.frame_psnr(Frame.rgb(rgb), colour.rgb_to_i420(rgb, "bt709", "full"),
                            "bt709", "full")
    assert m2["psnr_rgb"] < 100
    with pytest.raises(ValueError, match="source"):
        metrics.frame_psnr(Frame.rgb(rgb), Frame.rgb(rgb[:4]))
    with pytest.raises(ValueError, match="shape"):
        metrics.mse(rgb, rgb[:2])


def test_mean_metrics():
    rows = [{"a": 1.0, "b": 10.0}, {"a": 3.0, "b": 20.0}]
    assert metrics.mean_metrics(rows) == {"a": 2.0, "b": 15.0}
    assert metrics.mean_metrics([]) == {}

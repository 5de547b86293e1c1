"""learned-intra's oversampled mode: the encoder's 2x picture and the decoder's exact halving."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codecflow.codecs.learned.oversample import halve, upsample2  # noqa: E402


def test_upsample2_keeps_every_2x2_mean_of_the_picture():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 17, 23) * 0.4 + 0.3  # away from 0 and 1: no clamping
    u = upsample2(x)
    assert u.shape == (1, 3, 34, 46)
    assert torch.allclose(torch.nn.functional.avg_pool2d(u, 2), x, atol=1e-6)


def test_upsample2_is_smoother_than_pixel_replication():
    """The 2x picture must be cheap to code: its neighbour differences stay well below those
    of plain pixel replication (which would make every block edge a step)."""
    torch.manual_seed(1)
    x = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 64, 64), 4, 1, 0) * 0.8 + 0.1
    u = upsample2(x)
    rep = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    grad = lambda t: ((t[..., 1:] - t[..., :-1]) ** 2).mean()  # noqa: E731
    assert grad(u) < 0.8 * grad(rep)


def test_upsample2_stays_in_range():
    x = torch.zeros(1, 3, 8, 8)
    x[..., ::2, :] = 1.0  # stripes: bicubic overshoots, the result must still be 0..1
    u = upsample2(x)
    assert float(u.min()) >= 0.0 and float(u.max()) <= 1.0


def test_halve_is_the_rounded_2x2_mean_and_crops_the_padding():
    rng = np.random.default_rng(0)
    pic = rng.integers(0, 256, size=(1, 3, 64, 64), dtype=np.uint8)
    out = halve(torch.from_numpy(pic), 13, 21).numpy()
    assert out.dtype == np.uint8 and out.shape == (1, 3, 13, 21)
    blocks = pic[:, :, :26, :42].astype(np.int64).reshape(1, 3, 13, 2, 21, 2).sum(axis=(3, 5))
    assert np.array_equal(out, (blocks + 2) // 4)
    assert halve(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8), 1, 1).min() == 255

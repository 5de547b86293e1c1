"""Bjøntegaard delta rate / PSNR."""

import numpy as np
import pytest

from codecflow.eval import bdrate

RATE_A = [0.25, 0.5, 1.0, 2.0]
PSNR_A = [28.0, 31.0, 34.5, 38.0]


def test_half_rate_is_minus_50():
    rate_b = [r * 0.5 for r in RATE_A]
    assert bdrate.bd_rate(RATE_A, PSNR_A, rate_b, PSNR_A) == pytest.approx(-50.0, abs=0.5)
    assert bdrate.bd_rate(rate_b, PSNR_A, RATE_A, PSNR_A) == pytest.approx(100.0, abs=0.5)
    assert bdrate.bd_psnr(RATE_A, PSNR_A, rate_b, PSNR_A) > 0


def test_identical_and_shifted():
    assert bdrate.bd_rate(RATE_A, PSNR_A, RATE_A, PSNR_A) == pytest.approx(0.0, abs=1e-9)
    assert bdrate.bd_psnr(RATE_A, PSNR_A, RATE_A, PSNR_A) == pytest.approx(0.0, abs=1e-9)
    # +1 dB at every rate -> BD-PSNR +1 dB exactly
    up = [p + 1.0 for p in PSNR_A]
    assert bdrate.bd_psnr(RATE_A, PSNR_A, RATE_A, up) == pytest.approx(1.0, abs=1e-9)
    assert bdrate.bd_rate(RATE_A, PSNR_A, RATE_A, up) < 0


def test_order_does_not_matter():
    perm = [2, 0, 3, 1]
    r = [RATE_A[i] * 0.7 for i in perm]
    p = [PSNR_A[i] for i in perm]
    assert bdrate.bd_rate(RATE_A, PSNR_A, r, p) == pytest.approx(-30.0, abs=0.5)


def test_no_overlap_is_none():
    res = bdrate.compare(RATE_A, PSNR_A, [4, 8, 16], [40.0, 42.0, 44.0])
    assert res["bd_rate"] is None and "overlap" in res["reason"]
    assert bdrate.bd_rate(RATE_A, PSNR_A, [4, 8, 16], [40.0, 42.0, 44.0]) is None


def test_too_few_points():
    res = bdrate.compare(RATE_A, PSNR_A, [1.0], [30.0])
    assert res["bd_rate"] is None and "at least 2" in res["reason"]
    assert bdrate.bd_rate(RATE_A, PSNR_A, [1.0, 0.0, np.nan], [30.0, 31.0, 32.0]) is None


def test_partial_overlap_uses_common_range():
    # log-rate linear in PSNR: the interpolants are exact, the test curve covers only the top
    rate_a, psnr_a = [0.25, 0.5, 1.0, 2.0, 4.0], [28.0, 31.0, 34.0, 37.0, 40.0]
    rate_b, psnr_b = [0.5, 1.0, 2.0, 4.0], [34.0, 37.0, 40.0, 43.0]
    res = bdrate.compare(rate_a, psnr_a, rate_b, psnr_b)
    assert res["overlap_db"] == [34.0, 40.0]
    assert res["bd_rate"] == pytest.approx(-50.0, abs=1e-6)
    assert res["reason"] is None

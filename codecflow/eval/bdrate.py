"""Bjøntegaard delta rate and delta PSNR between two rate-distortion curves.

The usual method (VCEG-M33, with the piecewise-cubic variant of JVET's common test conditions
and CompressAI): each curve is interpolated with a monotone piecewise-cubic Hermite polynomial
(`scipy.interpolate.PchipInterpolator`) of log-rate as a function of PSNR, both are integrated over
the PSNR interval where the curves overlap, and the mean log-rate difference is turned into a
percentage:

    BD-rate = (exp(mean(ln R_test - ln R_anchor)) - 1) * 100  %

Negative = the test codec needs fewer bits than the anchor for the same quality. BD-PSNR is the
mirror image: PSNR as a function of log-rate, mean difference in dB over the overlapping rate
interval (positive = the test codec is better).

When the curves do not overlap (or a curve has fewer than two distinct points) there is no
meaningful number: the functions return None and `compare` says why.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.interpolate import PchipInterpolator


def _points(rate, quality, what: str):
    """-> (x, y) arrays ready for interpolation, or raise ValueError with the reason."""
    r = np.asarray(rate, dtype=np.float64).ravel()
    d = np.asarray(quality, dtype=np.float64).ravel()
    if r.shape != d.shape:
        raise ValueError(f"{what}: {r.size} rates but {d.size} quality values")
    ok = np.isfinite(r) & np.isfinite(d) & (r > 0)
    r, d = r[ok], d[ok]
    if r.size < 2:
        raise ValueError(f"{what}: needs at least 2 valid points (positive rate, finite "
                         f"quality), has {r.size}")
    return np.log(r), d


def _sorted_unique(x, y):
    """Sort by x and merge points with the same x (mean of their y)."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    ux, inv = np.unique(x, return_inverse=True)
    if ux.size == x.size:
        return x, y
    uy = np.zeros_like(ux)
    np.add.at(uy, inv, y)
    return ux, uy / np.bincount(inv)


def _mean_diff(xa, ya, xt, yt, unit: str, what: str):
    """Mean of (yt - ya) over the overlap of the x ranges -> (value, None) or (None, reason)."""
    xa, ya = _sorted_unique(xa, ya)
    xt, yt = _sorted_unique(xt, yt)
    if xa.size < 2 or xt.size < 2:
        return None, f"a curve has fewer than 2 distinct {what} values"
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if not hi > lo:
        fmt = (lambda v: f"{math.exp(v):.4g}") if unit == "rate" else (lambda v: f"{v:.2f}")
        return None, (f"{what} ranges do not overlap (anchor {fmt(xa[0])}..{fmt(xa[-1])}, "
                      f"test {fmt(xt[0])}..{fmt(xt[-1])})")
    ia = PchipInterpolator(xa, ya).integrate(lo, hi)
    it = PchipInterpolator(xt, yt).integrate(lo, hi)
    return float((it - ia) / (hi - lo)), None


def compare(anchor_rate, anchor_psnr, test_rate, test_psnr) -> dict:
    """-> {"bd_rate": % or None, "bd_psnr": dB or None, "reason": None or why, "overlap_db"}."""
    try:
        lra, pa = _points(anchor_rate, anchor_psnr, "anchor curve")
        lrt, pt = _points(test_rate, test_psnr, "test curve")
    except ValueError as e:
        return {"bd_rate": None, "bd_psnr": None, "reason": str(e), "overlap_db": None}
    d_lr, why_r = _mean_diff(pa, lra, pt, lrt, "dB", "PSNR")
    d_p, why_p = _mean_diff(lra, pa, lrt, pt, "rate", "rate")
    lo, hi = max(pa.min(), pt.min()), min(pa.max(), pt.max())
    return {"bd_rate": None if d_lr is None else float((math.exp(d_lr) - 1.0) * 100.0),
            "bd_psnr": d_p,
            "reason": why_r or why_p,
            "overlap_db": [float(lo), float(hi)] if hi > lo else None}


def bd_rate(anchor_rate, anchor_psnr, test_rate, test_psnr) -> float | None:
    """BD-rate of test vs anchor in percent (negative = fewer bits); None if no overlap."""
    return compare(anchor_rate, anchor_psnr, test_rate, test_psnr)["bd_rate"]


def bd_psnr(anchor_rate, anchor_psnr, test_rate, test_psnr) -> float | None:
    """BD-PSNR of test vs anchor in dB (positive = better); None if no overlap."""
    return compare(anchor_rate, anchor_psnr, test_rate, test_psnr)["bd_psnr"]

"""Quality metrics, as docs/stats.md defines them (8-bit planes, against the source)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from codecflow.codecs import colour
from codecflow.data import Frame

PSNR_CAP = 100.0  # identical planes: report 100 dB instead of infinity


def mse(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    if a.dtype == np.uint8 and b.dtype == np.uint8:  # exact sum of squares, SIMD
        return float(cv2.norm(np.ascontiguousarray(a), np.ascontiguousarray(b),
                              cv2.NORM_L2SQR)) / a.size
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(d * d))


def psnr_from_mse(m: float) -> float:
    if m <= 1e-10:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(255.0 * 255.0 / m))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr_from_mse(mse(a, b))


def frame_psnr(ref: Frame, rec: Frame, matrix: str = "bt709", rng: str = "limited") -> dict:
    """PSNR of one reconstructed frame against its source: y, u, v, yuv, rgb (dB).

    For I420 sources Y/U/V are measured on the original planes and RGB after converting both with
    the stream's matrix and range. For RGB sources RGB is measured directly and Y/U/V on a 4:4:4
    YCbCr conversion of both (same matrix and range).
    """
    if (ref.width, ref.height) != (rec.width, rec.height):
        raise ValueError(f"reconstruction is {rec.width}x{rec.height}, source is "
                         f"{ref.width}x{ref.height}")
    if ref.fmt == "yuv420p":
        rec420 = colour.to_i420(rec, matrix, rng)
        y, u, v = (psnr(a, b) for a, b in zip(ref.planes, rec420.planes))
        rgb = psnr(colour.to_rgb(ref, matrix, rng), colour.to_rgb(rec420, matrix, rng))
    else:
        ref_rgb = ref.planes[0]
        rec_rgb = colour.to_rgb(rec, matrix, rng)
        rgb = psnr(ref_rgb, rec_rgb)
        a = colour.rgb_to_yuv444(ref_rgb, matrix, rng)
        b = colour.rgb_to_yuv444(rec_rgb, matrix, rng)
        a, b = np.clip(np.rint(a), 0, 255).astype(np.uint8), np.clip(np.rint(b), 0, 255).astype(
            np.uint8)
        y, u, v = (psnr(a[..., i], b[..., i]) for i in range(3))
    return {"psnr_y": y, "psnr_u": u, "psnr_v": v, "psnr_yuv": (6 * y + u + v) / 8.0,
            "psnr_rgb": rgb}


def mean_metrics(rows: list) -> dict:
    if not rows:
        return {}
    keys = rows[0].keys()
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}

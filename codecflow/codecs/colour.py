"""Colour conversion between I420 (yuv420p) and RGB, BT.601 / BT.709, limited / full range.

Used wherever a codec works in a different space than its source (learned codecs and JPEG/WebP
work in RGB; YUV sources are converted with the stream's matrix and range, and the recon YUV sink
converts back with the same ones). Chroma: bilinear up-sampling, 2x2 box down-sampling.
"""

from __future__ import annotations

import cv2
import numpy as np

from codecflow.data import RANGE_CHOICES, Frame, chroma_size
from codecflow.errors import ConfigError

MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}
RANGES = RANGE_CHOICES


def _coeffs(matrix: str):
    if matrix not in MATRICES:
        raise ConfigError(f"colour matrix must be one of {sorted(MATRICES)}, got {matrix!r}")
    kr, kb = MATRICES[matrix]
    return kr, 1.0 - kr - kb, kb


def _range(rng: str):
    if rng not in RANGES:
        raise ConfigError(f"colour range must be one of {list(RANGES)}, got {rng!r}")
    # (y scale, y offset, c scale)
    return (219.0, 16.0, 224.0) if rng == "limited" else (255.0, 0.0, 255.0)


def _rgb_to_yuv_matrix(matrix: str, rng: str) -> np.ndarray:
    """3x4 affine map: [R, G, B] (0..255) -> [Y, Cb, Cr] code values."""
    kr, kg, kb = _coeffs(matrix)
    ys, yo, cs = _range(rng)
    y = np.array([kr, kg, kb])
    cb = (np.array([0.0, 0.0, 1.0]) - y) / (2.0 * (1.0 - kb))
    cr = (np.array([1.0, 0.0, 0.0]) - y) / (2.0 * (1.0 - kr))
    m = np.zeros((3, 4))
    m[0, :3], m[0, 3] = y * ys / 255.0, yo
    m[1, :3], m[1, 3] = cb * cs / 255.0, 128.0
    m[2, :3], m[2, 3] = cr * cs / 255.0, 128.0
    return m


def _yuv_to_rgb_matrix(matrix: str, rng: str) -> np.ndarray:
    """3x4 affine map: [Y, Cb, Cr] code values -> [R, G, B] (0..255); inverse of the above."""
    fwd = _rgb_to_yuv_matrix(matrix, rng)
    a = np.linalg.inv(fwd[:, :3])
    return np.hstack([a, -(a @ fwd[:, 3])[:, None]])


def rgb_to_yuv444(rgb: np.ndarray, matrix: str = "bt709", rng: str = "limited") -> np.ndarray:
    """uint8 HxWx3 RGB -> float32 HxWx3 (Y, Cb, Cr) in 8-bit code values (not rounded)."""
    return cv2.transform(rgb.astype(np.float32), _rgb_to_yuv_matrix(matrix, rng))


def yuv444_to_rgb(yuv: np.ndarray, matrix: str = "bt709", rng: str = "limited") -> np.ndarray:
    """HxWx3 (Y, Cb, Cr) code values (uint8 or float) -> uint8 RGB, rounded and clipped."""
    m = _yuv_to_rgb_matrix(matrix, rng)
    if yuv.dtype == np.uint8:
        return cv2.transform(yuv, m)  # saturating, rounding
    return _to_u8(cv2.transform(yuv.astype(np.float32), m))


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def rgb_to_i420(rgb: np.ndarray, matrix: str = "bt709", rng: str = "limited") -> Frame:
    h, w = rgb.shape[:2]
    yuv = rgb_to_yuv444(rgb, matrix, rng)
    cw, ch = chroma_size(w, h)
    chroma = yuv[..., 1:]
    if w % 2 or h % 2:
        chroma = cv2.copyMakeBorder(np.ascontiguousarray(chroma), 0, h % 2, 0, w % 2,
                                    cv2.BORDER_REPLICATE)
    if chroma.shape[:2] != (2 * ch, 2 * cw) or cw * ch == 0:
        raise ValueError(f"bad picture size {w}x{h}")
    chroma = cv2.resize(chroma, (cw, ch), interpolation=cv2.INTER_AREA)  # exact 2x2 mean
    chroma = chroma.reshape(ch, cw, 2)
    return Frame.yuv420(_to_u8(yuv[..., 0]), _to_u8(chroma[..., 0]), _to_u8(chroma[..., 1]))


def upsample_chroma(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear 2x up-sampling of a chroma plane (dtype kept), cropped to width x height."""
    ch, cw = plane.shape
    up = cv2.resize(plane, (cw * 2, ch * 2), interpolation=cv2.INTER_LINEAR)
    return up[:height, :width]


def i420_to_yuv444(frame: Frame) -> np.ndarray:
    """I420 -> uint8 HxWx3 (Y, Cb, Cr) with bilinear chroma."""
    y, u, v = frame.planes
    h, w = y.shape
    return cv2.merge([y, np.ascontiguousarray(upsample_chroma(u, w, h)),
                      np.ascontiguousarray(upsample_chroma(v, w, h))])


def i420_to_rgb(frame: Frame, matrix: str = "bt709", rng: str = "limited") -> np.ndarray:
    return yuv444_to_rgb(i420_to_yuv444(frame), matrix, rng)


def to_rgb(frame: Frame, matrix: str = "bt709", rng: str = "limited") -> np.ndarray:
    """Any Frame -> uint8 HxWx3 RGB."""
    if frame.fmt == "rgb24":
        return frame.planes[0]
    return i420_to_rgb(frame, matrix, rng)


def to_i420(frame: Frame, matrix: str = "bt709", rng: str = "limited") -> Frame:
    if frame.fmt == "yuv420p":
        return frame
    return rgb_to_i420(frame.planes[0], matrix, rng)


def like(frame_rgb: np.ndarray, target_fmt: str, matrix: str, rng: str) -> Frame:
    """RGB array -> Frame in the pixel format of the source it came from."""
    if target_fmt == "rgb24":
        return Frame.rgb(frame_rgb)
    return rgb_to_i420(frame_rgb, matrix, rng)

"""Picture file formats shared by sources, sinks, decode and eval: raw I420 (``.yuv``) files
and the image file extensions codecflow reads."""

from __future__ import annotations

import os
import re

import numpy as np

from codecflow.data import Frame, chroma_size

# image files read by image sources, training and `codecflow decode --reference`
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".pnm", ".webp", ".tif", ".tiff")

# NAME_WxH[_FPS][...].yuv : size anywhere in the stem, delimited by _ - . or the ends.
_NAME_RE = re.compile(
    r"(?:^|[_\-.])(\d{1,5})x(\d{1,5})(?:[_\-](\d{1,3}(?:\.\d+)?)(?:fps|hz|p)?)?(?=$|[_\-.])",
    re.IGNORECASE)


def parse_yuv_name(filename) -> tuple | None:
    """``"BasketballPass_416x240_50.yuv"`` -> ``(416, 240, 50.0)``; ``"a_176x144.yuv"`` ->
    ``(176, 144, None)``; a name without ``WxH`` -> ``None``."""
    stem = os.path.splitext(os.path.basename(os.fspath(filename)))[0]
    m = _NAME_RE.search(stem)
    if not m:
        return None
    w, h = int(m.group(1)), int(m.group(2))
    if w <= 0 or h <= 0:
        return None
    fps = float(m.group(3)) if m.group(3) else None
    if fps is not None and fps <= 0:
        fps = None
    return w, h, fps


def i420_frame_size(width: int, height: int) -> int:
    cw, ch = chroma_size(width, height)
    return width * height + 2 * cw * ch


def split_i420(buf: np.ndarray, width: int, height: int) -> Frame:
    """One frame's bytes (1-D uint8, exactly `i420_frame_size` long) -> Frame (views, no copy)."""
    cw, ch = chroma_size(width, height)
    ys, cs = width * height, cw * ch
    y = buf[:ys].reshape(height, width)
    u = buf[ys:ys + cs].reshape(ch, cw)
    v = buf[ys + cs:ys + 2 * cs].reshape(ch, cw)
    return Frame("yuv420p", [y, u, v])


def write_i420(fileobj, frame: Frame, matrix: str = "bt709", rng: str = "limited") -> int:
    """Append one frame to a raw I420 file object; returns the bytes written. An rgb24 frame is
    converted with `matrix` / `rng` first."""
    if frame.fmt != "yuv420p":
        from codecflow.codecs import colour

        frame = colour.to_i420(frame, matrix, rng)
    n = 0
    for p in frame.planes:
        a = np.ascontiguousarray(p, dtype=np.uint8)
        fileobj.write(a.data)
        n += a.nbytes
    return n

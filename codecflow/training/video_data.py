"""Video training data: clips (train / validation split by name), consecutive frame pairs,
synthetic motion from photos, and cached latent examples for learned-video's P-frame coder.

* Clips: raw ``NAME_WxH_FPS.yuv`` and PyAV-readable files (``.mkv``, ``.mp4``, ...) in the video
  folder; a clip is held out for validation when a hash of its name says so (about one in five,
  `stereo_data.is_validation`). Frames are converted to RGB (BT.709, limited range) and
  downscaled so that the long side is at most ``max_side`` (compute).
* Synthetic motion: two windows of a photo, the second moved by a random pan (up to 32 px) and
  a small zoom, with sensor noise: many cheap sequences with known, smooth motion.
* Examples (`stereo_data.latent_examples` with learned-video's condition): the previous frame is
  coded as learned-intra codes it; the example is (the frame's gained latent, the analysis of
  the decoded previous frame moved by the encoder's block motion search, at q's gains).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from codecflow.training.stereo_data import is_validation

VIDEO_EXTS = (".yuv", ".mkv", ".mp4", ".avi", ".mov", ".webm", ".y4m")


def find_clips(root: str | Path) -> list:
    root = Path(root)
    return sorted(str(p) for p in root.iterdir()
                  if p.is_file() and p.suffix.lower() in VIDEO_EXTS) if root.is_dir() else []


def split_clips(root: str | Path) -> tuple:
    clips = find_clips(root)
    name = lambda p: Path(p).stem  # noqa: E731
    return ([c for c in clips if not is_validation(name(c))],
            [c for c in clips if is_validation(name(c))])


def read_clip(path: str, limit: int, max_side: int = 640) -> list:
    """The first ``limit`` frames of a clip as uint8 RGB, long side <= ``max_side``."""
    import cv2

    from codecflow import media
    from codecflow.codecs import colour

    frames = []
    if path.lower().endswith(".yuv"):
        w, h, _ = media.parse_yuv_name(path)
        fb = media.i420_frame_size(w, h)
        n = min(limit, os.path.getsize(path) // fb)
        raw = np.fromfile(path, dtype=np.uint8, count=fb * n)
        i420 = [media.split_i420(raw[i * fb:(i + 1) * fb], w, h) for i in range(n)]
    else:
        from codecflow.stages.sources.video import decode_frames

        i420 = [f for _, _, f in decode_frames(path, limit=limit)]
    for f in i420:
        rgb = colour.to_rgb(f, "bt709", "limited")
        h, w = rgb.shape[:2]
        s = min(1.0, max_side / max(h, w))
        if s < 1.0:
            rgb = cv2.resize(rgb, (int(w * s) // 2 * 2, int(h * s) // 2 * 2),
                             interpolation=cv2.INTER_AREA)
        frames.append(np.ascontiguousarray(rgb))
    return frames


def synthesise_motion(rgb: np.ndarray, rng: np.random.Generator, size: int = 256) -> tuple:
    """One photo -> (previous, current) uint8 RGB frames: a window and the same window panned
    (up to 32 px) and slightly zoomed, with noise."""
    import cv2

    h, w = rgb.shape[:2]
    s = max(size / min(h, w), rng.uniform(0.6, 1.0))
    if s != 1.0:
        rgb = cv2.resize(rgb, (max(size, int(w * s)), max(size, int(h * s))),
                         interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    ch, cw = min(h, size), min(w, int(size * 1.5))
    dx, dy = rng.uniform(-32, 32), rng.uniform(-16, 16)
    zoom = rng.uniform(0.97, 1.03)
    cx = rng.uniform(cw / 2 + 34, max(cw / 2 + 34, w - cw / 2 - 34)) if w > cw + 68 else w / 2
    cy = rng.uniform(ch / 2 + 18, max(ch / 2 + 18, h - ch / 2 - 18)) if h > ch + 36 else h / 2

    def window(x, y, z):
        m = np.float32([[z, 0, x - z * cw / 2], [0, z, y - z * ch / 2]])
        return cv2.warpAffine(rgb, m, (cw, ch), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)

    prev = window(cx, cy, 1.0)
    cur = window(cx + dx, cy + dy, zoom).astype(np.float32)
    cur += rng.normal(0, rng.uniform(0, 1.5), size=cur.shape)
    return prev, np.clip(cur, 0, 255).astype(np.uint8)


def video_examples(model, prev: np.ndarray, cur: np.ndarray, qs: list,
                   intra_bytes: bool = False) -> dict:
    from codecflow.codecs.learned.video import BLOCK, SEARCH
    from codecflow.codecs.learned.warp import block_motion
    from codecflow.training.stereo_data import latent_examples

    def align(c, r, q):
        return block_motion(c, r, BLOCK, SEARCH)
    return latent_examples(model, prev, cur, qs, (align, BLOCK), intra_bytes)

"""Training data for image codecs: decoded once into RAM, random crops per step.

`ImageSet` holds uint8 RGB images; `sample_batch` draws a batch of random crops with a random
downscale (0.5-1.0: JPEG sources must not teach the model their block artefacts), random
flips. No disk I/O after loading. `synthetic_images` generates textured pictures for tests.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from codecflow.media import IMAGE_EXTS

_YUV_NAME = re.compile(r"_(\d+)x(\d+)_(\d+(?:\.\d+)?)\.yuv$")


def default_data_root() -> Path:
    """../shared/data relative to the repository root (or $CODECFLOW_DATA)."""
    env = os.environ.get("CODECFLOW_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _read_rgb(path: Path) -> np.ndarray | None:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return None
    return np.ascontiguousarray(img[..., ::-1])


def load_folder(folder: Path, exclude=("kodak",)) -> list:
    """All images of a folder (recursively), RGB uint8. Never anything under a Kodak folder."""
    out = []
    for p in sorted(Path(folder).rglob("*")):
        if p.suffix.lower() not in IMAGE_EXTS or any(e in p.as_posix().lower() for e in exclude):
            continue
        img = _read_rgb(p)
        if img is not None:
            out.append(img)
    return out


def load_yuv_frames(path: Path, every: int = 10) -> list:
    """Every `every`-th frame of a raw I420 NAME_WxH_FPS.yuv file, as RGB (BT.601 limited)."""
    m = _YUV_NAME.search(Path(path).name)
    if not m:
        return []
    w, h = int(m.group(1)), int(m.group(2))
    fsize = w * h * 3 // 2
    data = np.fromfile(path, dtype=np.uint8)
    out = []
    for i in range(0, len(data) // fsize, every):
        fr = data[i * fsize:(i + 1) * fsize].reshape(h * 3 // 2, w)
        out.append(np.ascontiguousarray(cv2.cvtColor(fr, cv2.COLOR_YUV2RGB_I420)))
    return out


def load_training_images(data: str | Path, extra: bool = True) -> tuple[list, list]:
    """-> (images, names of the data sets used). ``data``: a folder of images (the training
    photos); with ``extra``, also the stereo photos and frames of the raw .yuv videos found next
    to it under the data root (never Kodak)."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"training data folder not found: {data}")
    images = load_folder(data)
    index = data / "pack.json"  # a folder written by codecflow.training.pack
    if index.is_file():
        import json

        meta = json.loads(index.read_text())
        return images, [f"{s_} (packed as JPEG q{meta.get('quality')})"
                        for s_ in meta.get("sources", [])]
    sets = [str(data)]
    if extra:
        root = data.parent.parent if data.parent.name == "images" else data.parent
        stereo = root / "stereo"
        if stereo.is_dir():
            imgs = load_folder(stereo)
            if imgs:
                images += imgs
                sets.append(str(stereo))
        video = root / "video"
        if video.is_dir():
            for p in sorted(video.glob("*.yuv")):
                frames = load_yuv_frames(p)
                if frames:
                    images += frames
                    sets.append(f"{p} (every 10th frame)")
    return images, sets


def synthetic_images(n: int = 16, size: int = 160, seed: int = 0) -> list:
    """Textured test pictures: smooth gradients, blobs, stripes, edges and noise."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for _ in range(n):
        img = np.zeros((size, size, 3), np.float32)
        for c in range(3):
            a, b, d = rng.uniform(-1, 1, 3)
            img[..., c] = 0.5 + 0.3 * (a * xx + b * yy) + 0.1 * d
        for _ in range(rng.integers(3, 8)):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            col = rng.uniform(-0.4, 0.4, 3)
            m = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
            img[m] += col
        f = rng.uniform(5, 30)
        th = rng.uniform(0, np.pi)
        img += 0.08 * np.sin(2 * np.pi * f * (np.cos(th) * xx + np.sin(th) * yy))[..., None]
        img += rng.normal(0, 0.02, img.shape)
        out.append(np.clip(img * 255, 0, 255).astype(np.uint8))
    return out


class ImageSet:
    """In-RAM images -> random training crops (N x 3 x crop x crop float32 in [0, 1])."""

    def __init__(self, images: list, crop: int = 128, min_scale: float = 0.5,
                 max_scale: float = 1.0):
        if not images:
            raise ValueError("no training images")
        self.images = [im for im in images if min(im.shape[:2]) >= 16]
        self.crop = int(crop)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    def __len__(self):
        return len(self.images)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        img = self.images[int(rng.integers(len(self.images)))]
        h, w = img.shape[:2]
        c = self.crop
        lo = max(self.min_scale, c / min(h, w))
        s = float(rng.uniform(lo, max(lo, self.max_scale)))
        src = min(int(np.ceil(c / s)), h, w)  # source window that scales to c x c
        y0 = int(rng.integers(0, h - src + 1))
        x0 = int(rng.integers(0, w - src + 1))
        patch = img[y0:y0 + src, x0:x0 + src]
        if src != c:
            interp = cv2.INTER_AREA if src > c else cv2.INTER_CUBIC
            patch = cv2.resize(patch, (c, c), interpolation=interp)
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch[::-1]
        return patch

    def sample_batch(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        b = np.stack([self.sample(rng) for _ in range(batch)])
        return np.ascontiguousarray(b.transpose(0, 3, 1, 2)).astype(np.float32) / 255.0

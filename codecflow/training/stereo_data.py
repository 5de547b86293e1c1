"""Stereo training data: real rectified pairs (train / validation split) and pairs synthesised
from single photos, turned into cached latent examples for the learned-stereo coder.

* Real pairs: ``NAME_L.*`` / ``NAME_R.*`` anywhere under the stereo folder. A pair belongs to
  the validation split when a hash of its name says so (about one in five; stable when the
  folder grows, never chosen by looking at results).
* Synthetic pairs: a photo is the left view; the right view samples it at x + d(x, y), where d
  follows a smooth random depth map (a few low-frequency blobs plus a plane; the field is
  smooth, so there are no hard occlusion edges), a small gain / offset difference and sensor
  noise.
* Latent examples (`latent_examples`): for a pair and a q, the left view is coded as
  learned-intra codes it; the example is (the right view's gained latent y, the condition the
  codec builds: the analysis of the decoded left view moved by the encoder's disparity
  search, at q's gains).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from codecflow.media import IMAGE_EXTS


def is_validation(name: str) -> bool:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 5 == 0


def find_pairs(root: str | Path) -> list:
    """[(name, left path, right path)] for every NAME_L / NAME_R image pair under ``root``."""
    root = Path(root)
    found: dict = {}
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext.lower() not in IMAGE_EXTS or len(stem) < 3 or stem[-2] != "_":
                continue
            side = stem[-1].upper()
            if side in "LR":
                found.setdefault(stem[:-2], {})[side] = os.path.join(dirpath, f)
    return [(n, d["L"], d["R"]) for n, d in sorted(found.items()) if "L" in d and "R" in d]


def split_pairs(root: str | Path) -> tuple:
    """-> (training pairs, validation pairs)."""
    pairs = find_pairs(root)
    return ([p for p in pairs if not is_validation(p[0])],
            [p for p in pairs if is_validation(p[0])])


def read_rgb(path: str) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _smooth_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random field in [0, 1]: a tilted plane plus a few Gaussian blobs."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(-0.5, 0.5) * xx / w + rng.uniform(0, 1) * yy / h
    for _ in range(int(rng.integers(1, 6))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(0.08, 0.35) * max(h, w)
        f += rng.uniform(-1, 1.5) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    f -= f.min()
    return f / max(float(f.max()), 1e-6)


def synthesise_pair(rgb: np.ndarray, rng: np.random.Generator, max_side: int = 512) -> tuple:
    """One photo -> (left, right) uint8 RGB views with a smooth random disparity."""
    import cv2

    h, w = rgb.shape[:2]
    s = rng.uniform(0.5, 1.0) * min(1.0, max_side / max(h, w))
    if s < 1.0:  # downscale first: JPEG blocks must not become training targets
        rgb = cv2.resize(rgb, (max(16, int(w * s)), max(16, int(h * s))),
                         interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[:2]
    d_max = rng.uniform(4, min(96.0, w / 4))
    depth = _smooth_field(rng, h, w)
    disp = (d_max * depth).astype(np.float32)
    # right view: R(x, y) = L(x + d(x, y), y); where the shifted position leaves the picture
    # the border is replicated (as at a real rig's edge)
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    right = cv2.remap(rgb, xx + disp, yy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # photometric difference between the cameras and sensor noise
    gain = rng.uniform(0.94, 1.06, size=3).astype(np.float32)
    off = rng.uniform(-4, 4, size=3).astype(np.float32)
    noise = rng.normal(0, rng.uniform(0, 1.5), size=right.shape).astype(np.float32)
    right = np.clip(right.astype(np.float32) * gain + off + noise, 0, 255).astype(np.uint8)
    return rgb, right


def latent_examples(model, ref: np.ndarray, cur: np.ndarray, qs: list, align=None,
                    intra_bytes: bool = False) -> dict:
    """Code ``ref`` with the learned-intra ``model`` at each q; -> {"y": [cur's gained
    latent], "c": [the condition, real units], "q": [...]} (arrays C x h x w, float32), plus
    "intra_bytes" (what learned-intra spends on ``cur``) with ``intra_bytes``.

    ``align(cur, decoded ref, q) -> displacement field`` is the codec's encoder search (default:
    learned-stereo's rate-constrained block disparity at q); the condition is the analysis of the decoded reference
    moved by it, at q's gains (float here; the codec computes it exactly)."""
    import torch

    from codecflow.codecs.learned.warp import warp

    if align is None:
        from codecflow.codecs.learned.stereo import BLOCK, MARGIN, MAX_DISPARITY
        from codecflow.codecs.learned.warp import block_disparity, disparity_rate

        def align(c, r, q):
            return block_disparity(c, r, BLOCK, -MARGIN, MAX_DISPARITY, disparity_rate(q))
        block = BLOCK
    else:
        align, block = align
    out: dict = {"y": [], "c": [], "q": []}
    h, w = cur.shape[:2]
    with torch.no_grad():
        ga_r, ga_c = model.g_a(_tensor(model, ref)), model.g_a(_tensor(model, cur))
        for q in qs:
            g, ig = model.gains(torch.tensor([model.q_to_pos(q)]))
            coded = model.compress_latent(ga_r * g)
            pic = model.g_s(coded["y16"].float() / 16.0 * ig)  # float: close to the exact one
            pic = (pic[0, :, :h, :w].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            aligned = warp(pic, align(cur, pic, q), block)
            c = model.g_a(_tensor(model, aligned)) * g
            y = ga_c * g
            out["y"].append(y[0].float().numpy())
            out["c"].append(c[0].float().numpy())
            out["q"].append(np.array([q], dtype=np.int16))
            if intra_bytes:
                intra = model.compress_latent(y)
                out.setdefault("intra_bytes", []).append(
                    np.array([sum(len(s) for s in intra["strings"])], dtype=np.int64))
    return out


def _tensor(model, rgb: np.ndarray):
    import torch

    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0
    return model.pad(x)

"""Latent caching: train small networks on the outputs of frozen transforms, computed once.

The stereo, video and layered codecs reuse the intra transforms frozen and first train only
their small conditional networks (DESIGN.md, "Conditional learned codecs"). Running the frozen
analysis transform on every step would cost most of a step on a CPU; instead its outputs are
computed once, stored on disk next to the run, and reloaded while the key that produced them
(weights, data, settings) is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np


def cache_key(**parts) -> str:
    """A short hash of what produced a cache (weights sha, data files, q, ...)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_arrays(folder: str | Path, name: str, key: str,
                  compute: Callable[[], dict]) -> dict:
    """{array name: list of arrays} from ``folder/name-<key>.npz``, computed by ``compute()``
    and written there (atomically) the first time. Arrays of one list may differ in size."""
    folder = Path(folder)
    path = folder / f"{name}-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            out: dict = {}
            for k in sorted(z.files, key=lambda s: (s.rsplit("_", 1)[0], int(s.rsplit("_", 1)[1]))):
                out.setdefault(k.rsplit("_", 1)[0], []).append(z[k])
            return out
    data = compute()
    folder.mkdir(parents=True, exist_ok=True)
    flat = {f"{k}_{i}": np.ascontiguousarray(a) for k, arrs in data.items()
            for i, a in enumerate(arrs)}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **flat)
    os.replace(tmp, path)
    return {k: list(v) for k, v in data.items()}


class LatentPairs:
    """Aligned pairs (y, c) of latent-grid arrays (C x h x w float32) -> random aligned crops
    of ``crop`` x ``crop`` latent positions: batches (y, c) of B x C x crop x crop."""

    def __init__(self, ys: list, cs: list, crop: int):
        pairs = [(y, c) for y, c in zip(ys, cs) if min(y.shape[1:]) >= crop]
        if not pairs:
            raise ValueError(f"no latent pair is at least {crop} x {crop}")
        for y, c in pairs:
            if y.shape[1:] != c.shape[1:]:
                raise ValueError(f"latent {y.shape} and condition {c.shape} differ in size")
        self.pairs, self.crop = pairs, int(crop)

    def sample_batch(self, rng: np.random.Generator, n: int) -> tuple:
        ys, cs = [], []
        for _ in range(n):
            y, c = self.pairs[int(rng.integers(len(self.pairs)))]
            h, w = y.shape[1:]
            i = int(rng.integers(0, h - self.crop + 1))
            j = int(rng.integers(0, w - self.crop + 1))
            ys.append(y[:, i:i + self.crop, j:j + self.crop])
            cs.append(c[:, i:i + self.crop, j:j + self.crop])
        return np.stack(ys).astype(np.float32), np.stack(cs).astype(np.float32)

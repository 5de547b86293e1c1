"""Training crops sampled on the training device (GPU) from pictures kept there as uint8.

The CPU sampler (`datasets.ImageSet`) resizes and crops with OpenCV, one picture at a time. On a
GPU that would make the step wait for the host, so here the whole training set is uploaded once
(uint8, ~3 bytes a pixel: 140 M pixels take ~0.4 GB) and each batch is cut, rescaled and flipped
on the device. The random draws come from the same numpy generator as on the CPU (cheap: a few
numbers per crop), so a run stays resumable the same way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class DeviceImageSet:
    """Same sampling as `ImageSet` (random picture, random scale in [min_scale, max_scale] of a
    crop x crop window, random flips), done with torch ops on ``device``."""

    def __init__(self, images: list, crop: int = 128, device: str = "cpu",
                 min_scale: float = 0.5, max_scale: float = 1.0):
        imgs = [im for im in images if min(im.shape[:2]) >= 16]
        if not imgs:
            raise ValueError("no training images")
        self.crop = int(crop)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.device = torch.device(device)
        self.images = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)
                       .contiguous().to(self.device) for im in imgs]
        self.shapes = [tuple(im.shape[:2]) for im in imgs]

    def __len__(self):
        return len(self.images)

    def nbytes(self) -> int:
        return sum(t.numel() for t in self.images)

    def sample_batch(self, rng: np.random.Generator, batch: int) -> torch.Tensor:
        """-> batch x 3 x crop x crop float32 in [0, 1] on the device."""
        c = self.crop
        out = torch.empty(batch, 3, c, c, device=self.device)
        for i in range(batch):
            k = int(rng.integers(len(self.images)))
            h, w = self.shapes[k]
            lo = max(self.min_scale, c / min(h, w))
            s = float(rng.uniform(lo, max(lo, self.max_scale)))
            src = min(int(np.ceil(c / s)), h, w)
            y0 = int(rng.integers(0, h - src + 1))
            x0 = int(rng.integers(0, w - src + 1))
            patch = self.images[k][:, y0:y0 + src, x0:x0 + src].unsqueeze(0).float()
            if src != c:
                if src > c:
                    patch = F.interpolate(patch, size=(c, c), mode="bilinear", antialias=True,
                                          align_corners=False)
                else:
                    patch = F.interpolate(patch, size=(c, c), mode="bicubic",
                                          align_corners=False)
            flips = [d for d, flip in ((3, rng.random() < 0.5), (2, rng.random() < 0.5)) if flip]
            if flips:
                patch = patch.flip(flips)
            out[i] = patch[0]
        return out.clamp_(0, 255).div_(255.0)

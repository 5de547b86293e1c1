"""learned-intra's oversampled mode: code a picture at twice its width and height.

Why: the analysis/synthesis pair of the shipped image model stops improving near 34-35 dB
whatever the rate (its unquantised latents decode to about that), so more bits alone cannot
reach high fidelity. Coded at 2x, the same transforms see a smoother picture with four times
the latent samples per source pixel, and the decoder's 2x2 mean averages their errors: the
top of the rate range reaches 40 dB and more (docs/training.md, "High quality: the
oversampled mode").

* Encoder only (float is fine, nothing here has to be reproduced): `upsample2` makes a
  2H x 2W picture whose 2x2 means are the source picture exactly (bicubic, plus the
  per-block correction that restores each block's mean; clamping to 0..255 aside).
* Decoder (exact, integers only): `halve` takes the decoded 2H x 2W uint8 picture to H x W
  by rounded 2x2 means, ``(a + b + c + d + 2) // 4``: the same pixels on every machine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """1 x 3 x H x W float in 0..1 -> 1 x 3 x 2H x 2W in 0..1 whose 2x2 means are x."""
    b = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    r = x - F.avg_pool2d(b, 2)
    return (b + F.interpolate(r, scale_factor=2, mode="nearest")).clamp_(0.0, 1.0)


def halve(picture: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """1 x 3 x Hp x Wp uint8 (the synthesis of a 2h x 2w picture, padded) -> 1 x 3 x h x w
    uint8, each pixel the rounded mean of its 2x2 block (integer arithmetic)."""
    p = picture[:, :, :2 * h, :2 * w].to(torch.int32)
    s = p[:, :, 0::2, 0::2] + p[:, :, 0::2, 1::2] + p[:, :, 1::2, 0::2] + p[:, :, 1::2, 1::2]
    return torch.div(s + 2, 4, rounding_mode="floor").to(torch.uint8)

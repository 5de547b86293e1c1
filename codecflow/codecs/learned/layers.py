"""Small building blocks of the learned intra model (torch; imported only by learned codecs)."""

from __future__ import annotations

import torch
from torch import nn


def conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, output_padding=stride - 1,
                              padding=k // 2)


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round with a straight-through gradient."""
    return x + (torch.round(x) - x).detach()


MEAN_STEP = 1.0 / 16.0


def grid_means(mu: torch.Tensor) -> torch.Tensor:
    """Snap predicted means to a 1/16 grid (straight-through gradient).

    Makes the decoded latent robust to last-bit float differences between encoder and decoder
    runs (a tiny difference in a mean almost never crosses a grid boundary).
    """
    return mu + (torch.round(mu / MEAN_STEP) * MEAN_STEP - mu).detach()


def anchor_mask(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """1 x 1 x h x w checkerboard, 1 at anchors ((i + j) even)."""
    i = torch.arange(h, device=device).view(h, 1)
    j = torch.arange(w, device=device).view(1, w)
    return ((i + j) % 2 == 0).to(dtype).view(1, 1, h, w)


def cb_gather(t: torch.Tensor, anchors: bool) -> torch.Tensor:
    """B x C x H x W (H, W even) -> B x 2C x H/2 x W/2 holding only the anchor (or non-anchor)
    positions of the checkerboard."""
    if anchors:
        return torch.cat([t[..., 0::2, 0::2], t[..., 1::2, 1::2]], dim=1)
    return torch.cat([t[..., 0::2, 1::2], t[..., 1::2, 0::2]], dim=1)


def cb_scatter(packed: torch.Tensor, out: torch.Tensor, anchors: bool) -> torch.Tensor:
    """Inverse of `cb_gather`: writes the packed positions into ``out`` (in place) and returns it."""
    c = out.shape[1]
    a, b = packed[:, :c], packed[:, c:]
    if anchors:
        out[..., 0::2, 0::2] = a
        out[..., 1::2, 1::2] = b
    else:
        out[..., 0::2, 1::2] = a
        out[..., 1::2, 0::2] = b
    return out

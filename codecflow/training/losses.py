"""Rate-distortion loss for the learned image codecs."""

from __future__ import annotations

import math

import torch


def rd_loss(out: dict, x: torch.Tensor, lam: torch.Tensor) -> dict:
    """Per-sample lambda: loss = mean_i(lambda_i * 255^2 * MSE_i + bpp_i).

    ``out``: model output with ``x_hat`` and ``likelihoods``; ``x``: B x 3 x H x W in [0, 1];
    ``lam``: (B,) lambdas on the CompressAI scale (MSE of 0..1 images times 255^2).
    """
    b, _, h, w = x.shape
    bits = 0.0
    for lik in out["likelihoods"].values():
        bits = bits + torch.log(lik).reshape(b, -1).sum(1) / -math.log(2)
    bpp = bits / (h * w)
    mse = ((out["x_hat"] - x) ** 2).reshape(b, -1).mean(1)
    loss = (lam * 255.0 ** 2 * mse + bpp).mean()
    m = mse.mean()
    return {"loss": loss, "bpp": bpp.mean(), "mse": m,
            "psnr": -10.0 * torch.log10(m.detach().clamp_min(1e-10))}

"""Training task: a `ConditionalLatentCoder` on cached latent pairs (y, condition).

The loss is the rate of the coded latent in bits per picture pixel (a latent position covers
16 x 16 pixels) plus ``latent_lambda`` times the MSE of the decoded latent. Validation codes
held-out pairs for real (exact integer coding, bytes of the rANS strings).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from codecflow.codecs.learned.conditional import build_coder, pad_latent
from codecflow.training.latents import LatentPairs
from codecflow.training.task import Task

PIXELS_PER_POSITION = 16 * 16


class ConditionalLatentTask(Task):
    name = "conditional-latent"
    overridable = ("latent_lambda", "crop")

    def __init__(self, ys: list, cs: list, val: list | None = None, c_frac: int = 4,
                 data_sets: list | None = None):
        self.ys, self.cs, self.val = ys, cs, list(val or [])
        self.c_frac, self.data_sets = int(c_frac), list(data_sets or [])

    def build_model(self, arch):
        return build_coder(arch)

    def data(self, cfg: dict, device):
        self.lam = float(cfg.get("latent_lambda", 1.0))
        return LatentPairs(self.ys, self.cs, cfg["crop"])

    def loss(self, model, batch, amp_dtype) -> dict:
        y, c = batch
        c = torch.round(c * 2 ** self.c_frac) / 2 ** self.c_frac  # as the decoder has it
        out = model(y, c)
        bits = sum(-torch.log(v).sum() for v in out["likelihoods"].values()) / math.log(2)
        bpp = bits / (y.shape[0] * y.shape[2] * y.shape[3] * PIXELS_PER_POSITION)
        mse = torch.mean((out["y_hat"] - y) ** 2)
        return {"loss": bpp + self.lam * mse, "bpp": bpp, "mse": mse}

    def samples_px(self, cfg: dict) -> int:
        return int(cfg["crop"]) ** 2 * PIXELS_PER_POSITION

    def validate(self, model):
        if not self.val:
            return None
        was = model.training
        model.eval()
        model.build_tables()
        bpp, mse = [], []
        for y, c in self.val:
            yt = pad_latent(torch.from_numpy(y)[None].float())
            ct = pad_latent(torch.round(torch.from_numpy(c)[None].double() * 2 ** self.c_frac))
            out = model.compress(yt, ct, self.c_frac)
            nbytes = sum(len(s) for s in out["strings"])
            bpp.append(8.0 * nbytes / (y.shape[1] * y.shape[2] * PIXELS_PER_POSITION))
            y_hat = out["y_hat"][0, :, :y.shape[1], :y.shape[2]] / 2 ** 12
            mse.append(float(torch.mean((y_hat - torch.from_numpy(y).double()) ** 2)))
        model.train(was)
        return [{"bpp": float(np.mean(bpp)), "latent_mse": float(np.mean(mse))}]

    def describe(self, rows: list) -> str:
        return "  ".join(f"{r['bpp']:.4f} bpp, latent MSE {r['latent_mse']:.4f}" for r in rows)

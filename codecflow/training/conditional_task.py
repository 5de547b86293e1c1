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
                 data_sets: list | None = None, init_model=None):
        self.ys, self.cs, self.val = ys, cs, list(val or [])
        self.c_frac, self.data_sets = int(c_frac), list(data_sets or [])
        self.init_model = init_model  # a new run starts as this intra model's entropy model

    def prepare(self, cfg: dict):
        return self.init_model

    def apply_init(self, model, init, cfg: dict) -> tuple:
        model.init_from_intra(init)
        return 0, 0.0

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
        bpp, mse, ref = [], [], []
        for item in self.val:
            y, c = item[0], item[1]
            yt = pad_latent(torch.from_numpy(y)[None].float())
            ct = pad_latent(torch.round(torch.from_numpy(c)[None].double() * 2 ** self.c_frac))
            out = model.compress(yt, ct, self.c_frac)
            nbytes = sum(len(s) for s in out["strings"])
            px = y.shape[1] * y.shape[2] * PIXELS_PER_POSITION
            bpp.append(8.0 * nbytes / px)
            if len(item) > 2:  # bytes the unconditional (intra) coder spends on it
                ref.append(8.0 * float(item[2]) / px)
            y_hat = out["y_hat"][0, :, :y.shape[1], :y.shape[2]] / 2 ** 12
            mse.append(float(torch.mean((y_hat - torch.from_numpy(y).double()) ** 2)))
        model.train(was)
        row = {"bpp": float(np.mean(bpp)), "latent_mse": float(np.mean(mse))}
        if ref:
            row["intra_bpp"] = float(np.mean(ref))
            row["saving"] = float(1.0 - np.sum(bpp) / np.sum(ref))
        return [row]

    def describe(self, rows: list) -> str:
        return "  ".join(f"{r['bpp']:.4f} bpp, latent MSE {r['latent_mse']:.4f}" +
                         (f" (intra {r['intra_bpp']:.4f} bpp: {100 * r['saving']:.1f} % saved)"
                          if "saving" in r else "") for r in rows)

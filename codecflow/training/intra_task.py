"""The learned-intra training task (for the generic loop in `loop.py`).

Random crops of the training pictures; each sample gets a random rate position p in
[0, K-1] (its lambda interpolated log-linearly between the anchors), loss
lambda * 255^2 * MSE + bpp; validation is real coding (exact integer decoding, bytes of the
payload) of a few Kodak pictures at a few q.

``oversampled`` (`--oversampled`): the model of learned-intra's oversampled mode. Each crop
is coded at 2x as the encoder codes it (`oversample.upsample2`), the distortion is that of the
reconstruction's 2x2 means against the crop (what the decoder's `halve` shows), the bits are
weighed per pixel of the 2x picture, and the rate positions are those the mode may use
(OVERSAMPLED_RATES).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from codecflow.codecs.learned.model import build_model
from codecflow.training.losses import rd_loss
from codecflow.training.task import Task

VAL_QS = (0, 21, 42, 63)
OVERSAMPLED_RATES = (4, 63)  # the rate points an oversampled model trains over
OVERSAMPLED_VAL_QS = (14, 34, 49, 63)
VAL_KODAK = ("kodim01.png", "kodim04.png", "kodim07.png", "kodim14.png", "kodim19.png",
             "kodim23.png")


def shipped_progress(weights_path) -> tuple[int, float, list, list]:
    """(steps, seconds, commands, data sets) recorded in the manifest for a shipped weights
    file, so a session that starts from the committed weights (its run folder gone) continues
    the count.
    (0, 0.0, [], []) when the file is not the one the manifest describes."""
    from codecflow.codecs.learned import weights as W

    path = Path(weights_path)
    for entry in W.read_manifest(path.parent).values():
        if entry.get("file") == path.name and entry.get("sha256") == W.sha256_file(path):
            t = entry.get("training") or {}
            cmds = t.get("command") or []
            return (int(t.get("steps", 0)), float(t.get("hours", 0.0)) * 3600.0,
                    list(cmds) if isinstance(cmds, list) else [cmds], list(t.get("data") or []))
    return 0, 0.0, [], []




def make_optimizers(model, cfg: dict):
    gains = [model.log_gain, model.log_inv_gain]
    gain_ids = {id(p) for p in gains}
    net = [p for n, p in model.named_parameters()
           if not n.endswith(".quantiles") and id(p) not in gain_ids]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam([{"params": net, "lr_mult": 1.0},
                            {"params": gains, "lr_mult": cfg.get("gain_lr_mult", 5.0)}],
                           lr=cfg["lr"])
    aux_opt = torch.optim.Adam(aux, lr=1e-3)
    return opt, aux_opt


def load_val_images(cfg: dict) -> list:
    d = cfg.get("val_dir")
    if not d or not Path(d).is_dir():
        return []
    from codecflow.training.datasets import _read_rgb

    out = []
    for name in cfg.get("val_images") or VAL_KODAK:
        img = _read_rgb(Path(d) / name)
        if img is not None:
            out.append(img)
    return out


def validate(model, images: list, qs=VAL_QS, oversampled: bool = False) -> list:
    """Real compress / decompress -> [{"q", "bpp", "psnr_rgb", "enc_s", "dec_s"}] (means);
    ``oversampled``: coded in the oversampled mode."""
    from codecflow.codecs.learned.intra import decode_rgb, encode_rgb
    from codecflow.codecs.metrics import psnr

    was_training = model.training
    model.eval()
    model.build_tables()
    rows = []
    for q in qs:
        bpp, ps, te, td = [], [], 0.0, 0.0
        for img in images:
            t0 = time.perf_counter()
            payload, _ = encode_rgb(model, img, q, oversampled=oversampled)
            t1 = time.perf_counter()
            rec = decode_rgb(model, payload)
            td += time.perf_counter() - t1
            te += t1 - t0
            bpp.append(len(payload) * 8.0 / (img.shape[0] * img.shape[1]))
            ps.append(psnr(img, rec))
        n = max(1, len(images))
        rows.append({"q": q, "bpp": float(np.mean(bpp)), "psnr_rgb": float(np.mean(ps)),
                     "enc_s": te / n, "dec_s": td / n})
    model.train(was_training)
    return rows


def _cpu_copy(model):
    """Validation codes on the CPU (as the shipped codec does by default), from a copy."""
    import copy

    return copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format)


class IntraTask(Task):
    name = "learned-intra"
    overridable = ("val_dir", "val_images", "gain_lr_mult", "crop", "data_on_device")

    def __init__(self, images: list, data_sets: list | None = None):
        self.images, self.data_sets = images, list(data_sets or [])
        self.val_images: list = []
        self.oversampled = False

    def prepare(self, cfg: dict):
        if not cfg.get("init_from"):
            return None
        from codecflow.codecs.learned.weights import load_state

        init = load_state(cfg["init_from"])
        a = init.get("architecture") or {}
        cfg["arch"] = {k: a[k] for k in ("N", "M", "lambdas") if k in a} or cfg.get("arch")
        return init

    def build_model(self, arch):
        return build_model(arch)

    def architecture(self, model) -> dict:
        return {"N": model.N, "M": model.M, "lambdas": list(model.lambdas)}

    def optimizers(self, model, cfg: dict):
        return make_optimizers(model, cfg)

    def apply_init(self, model, init, cfg: dict) -> tuple:
        from codecflow.codecs.learned.weights import strip_cdf_buffers

        sd = {k: v.float() if v.is_floating_point() else v
              for k, v in strip_cdf_buffers(init["state_dict"]).items()}
        torch.nn.Module.load_state_dict(model, sd, strict=False)
        step, elapsed, history, earlier_data = shipped_progress(cfg["init_from"])
        cfg["commands"] = history + cfg.get("commands", [])
        cfg["data_sets"] = earlier_data
        return step, elapsed

    def data(self, cfg: dict, device):
        self.val_images = load_val_images(cfg)
        self.oversampled = bool(cfg.get("oversampled"))
        on_device = cfg.get("data_on_device")
        if on_device is None:
            on_device = device.type != "cpu"
        if on_device:
            from codecflow.training.device_data import DeviceImageSet

            return DeviceImageSet(self.images, crop=cfg["crop"], device=device)
        from codecflow.training.datasets import ImageSet

        return ImageSet(self.images, crop=cfg["crop"])

    def loss(self, model, x, amp_dtype) -> dict:
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.oversampled:
            pos = (torch.rand(x.shape[0]) * (model.K - 1)).to(x.device)
            return rd_loss(model(x, pos, amp_dtype), x, model.pos_to_lambda(pos))
        from codecflow.codecs.learned.oversample import upsample2

        lo, hi = (model.q_to_pos(q) for q in OVERSAMPLED_RATES)
        pos = (lo + torch.rand(x.shape[0]) * (hi - lo)).to(x.device)
        with torch.no_grad():
            x2 = upsample2(x)
        out = model(x2, pos, amp_dtype)
        out["x_hat"] = torch.nn.functional.avg_pool2d(out["x_hat"], 2)
        # the rate weighed per pixel of the 2x picture (lambda x 4 against bits per pixel of
        # the crop): the trade-off the model makes when it codes a 2x picture, so each rate
        # point keeps about the reach it has there (up to ~41 dB on Kodak at rate point 63)
        return rd_loss(out, x, 4.0 * model.pos_to_lambda(pos))

    def samples_px(self, cfg: dict) -> int:
        return int(cfg["crop"]) ** 2

    def validate(self, model):
        if not self.val_images:
            return None
        dev = next(model.parameters()).device
        return validate(model if dev.type == "cpu" else _cpu_copy(model), self.val_images,
                        OVERSAMPLED_VAL_QS if self.oversampled else VAL_QS, self.oversampled)

    def describe(self, rows: list) -> str:
        return "  ".join(f"q{r['q']}: {r['bpp']:.3f} bpp {r['psnr_rgb']:.2f} dB" for r in rows)

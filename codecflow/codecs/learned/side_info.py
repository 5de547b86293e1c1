"""Side information at the decoder: refine a decoded view with the other, decoded view.

Used by learned-stereo-si (`stereo_si.py`) and `codecflow decode --side-info`. Each view was
coded alone (a learned-intra payload); the decoder that holds both moves the other view onto
this one and a small network fuses them:

1. Alignment: the other view is given the mean and spread of this one per channel
   (`photometric_match`); then (`match_rows`) every pixel takes the horizontal shift d in
   0..MAX_DISPARITY at which the other view matches best: least sum of absolute grey-level
   differences over a WINDOW x WINDOW window. Integer sums (exact in float32 below 2^24),
   strict comparisons in a fixed order: the same field on every machine.
2. Gate (`related`): the other view is used only when it shows the same scene: at least
   MIN_MATCHED of the pixels must find a match within MATCH_LEVELS grey levels on average over
   the window. Otherwise the view is decoded plainly (an unrelated picture costs nothing).
3. Fusion (`SideInfoRefiner`): [view, moved other view, matching cost, q] at full resolution,
   folded 2 x 2 into channels, a few 3 x 3 convolutions with leaky ReLUs, unfolded into a
   correction added to the view. At decoding the network runs on integers (`exact.py`), so the
   refined picture is the same on every machine and thread count, like learned-intra's.
"""

from __future__ import annotations

import numpy as np

from codecflow.codecs.learned.intra import is_grey
from codecflow.errors import CodecError

MAX_DISPARITY = 128
WINDOW = 9
MATCH_LEVELS = 6          # mean absolute grey-level difference that counts as a match
MIN_MATCHED = 0.2         # share of pixels that must match for the other view to be used
COST_SCALE = 1024         # the network sees cost / 1024 (window sums are below 2^15)
PIXEL_SCALE = 256         # ... and pixels / 256
F_IN = 12                 # integer inputs: units of 2^-12
F_OUT = 8                 # integer output: the correction in whole pixel levels (256 * 2^-8)
MAX_COST = WINDOW * WINDOW * 255
DIRECTIONS = {"left": -1, "right": +1}  # the view being refined: other(x + sign * d) moves


def grey_levels(rgb: np.ndarray) -> np.ndarray:
    """(77 R + 150 G + 29 B + 128) >> 8 as int16: integer grey levels (exact)."""
    x = rgb.astype(np.int32)
    return ((77 * x[..., 0] + 150 * x[..., 1] + 29 * x[..., 2] + 128) >> 8).astype(np.int16)


def match_rows(target: np.ndarray, other: np.ndarray, sign: int,
               max_d: int = MAX_DISPARITY) -> tuple:
    """For each pixel of ``target`` (uint8 H x W x 3), the pixel other(x + sign d, y) (edges
    replicated) for the d in 0..max_d of least window cost (sum of absolute grey-level
    differences over WINDOW x WINDOW; ties go to the smaller d).
    -> (moved other view uint8 H x W x 3, cost int32 H x W)."""
    import cv2

    if target.shape != other.shape:
        raise CodecError(f"side information: views differ in size ({target.shape[1]}x"
                         f"{target.shape[0]} vs {other.shape[1]}x{other.shape[0]})")
    t, o = grey_levels(target), grey_levels(other)
    h, w = t.shape
    max_d = min(max_d, w - 1)
    o = np.pad(o, ((0, 0), (max_d, max_d)), mode="edge")
    best = np.full((h, w), np.inf, np.float32)
    best_d = np.zeros((h, w), np.int32)
    for d in range(max_d + 1):
        x0 = max_d + sign * d
        diff = np.abs(t - o[:, x0:x0 + w]).astype(np.float32)
        cost = cv2.boxFilter(diff, -1, (WINDOW, WINDOW), normalize=False,
                             borderType=cv2.BORDER_REFLECT)
        better = cost < best
        np.copyto(best, cost, where=better)
        np.copyto(best_d, d, where=better)
    xs = np.clip(np.arange(w)[None, :] + sign * best_d, 0, w - 1)
    moved = other[np.arange(h)[:, None], xs]
    return np.ascontiguousarray(moved), best.astype(np.int32)


def photometric_match(other: np.ndarray, view: np.ndarray) -> np.ndarray:
    """``other`` with the mean and spread of ``view`` per channel (the cameras of a rig differ
    in exposure and white balance): gain and offset from integer sums and single IEEE
    operations, rounded to learned-stereo's units and applied in integers (exact)."""
    from codecflow.codecs.learned.stereo import GAIN_ONE, OFFSET_ONE, compensate

    n = view.shape[0] * view.shape[1]
    g, o = [], []
    for c in range(3):
        a = other[..., c].astype(np.int64)
        b = view[..., c].astype(np.int64)
        sa, sb = int(a.sum()), int(b.sum())
        va = n * int((a * a).sum()) - sa * sa  # n^2 x variance, exact
        vb = n * int((b * b).sum()) - sb * sb
        gain = min(max((vb / va) ** 0.5 if va > 0 else 1.0, 0.25), 4.0)
        offset = min(max((sb - gain * sa) / n, -255.0), 255.0)
        g.append(int(np.floor(gain * GAIN_ONE + 0.5)))
        o.append(int(np.floor(offset * OFFSET_ONE + 0.5)))
    return compensate(other, (g, o))


def matched_share(cost: np.ndarray) -> float:
    return float(np.count_nonzero(cost <= WINDOW * WINDOW * MATCH_LEVELS)) / cost.size


def related(cost: np.ndarray) -> bool:
    return matched_share(cost) >= MIN_MATCHED


def build_refiner(arch: dict | None = None):
    """The fusion network from its architecture map ({"channels", "layers", "base"})."""
    import torch.nn as nn
    import torch.nn.functional as F

    a = {"channels": 32, "layers": 5, **(arch or {})}

    class SideInfoRefiner(nn.Module):
        """[view, moved other view, cost, q] (8 planes) -> a correction of the view."""

        def __init__(self, channels: int, layers: int, base: dict | None):
            super().__init__()
            self.channels, self.layers, self.base = channels, layers, base
            mods, c_in = [], 8 * 4
            for _ in range(layers - 1):
                mods += [nn.Conv2d(c_in, channels, 3, padding=1), nn.LeakyReLU(0.125)]
                c_in = channels
            mods.append(nn.Conv2d(c_in, 3 * 4, 3, padding=1))
            nn.init.zeros_(mods[-1].weight)  # starts as the plain decode
            nn.init.zeros_(mods[-1].bias)
            self.net = nn.Sequential(*mods)

        def architecture(self) -> dict:
            return {"class": "SideInfoRefiner", "channels": self.channels,
                    "layers": self.layers, "base": self.base}

        def forward(self, planes):
            """planes: N x 8 x H x W (H, W even), as `input_planes` makes them -> the
            correction in units of PIXEL_SCALE levels (N x 3 x H x W)."""
            return F.pixel_shuffle(self.net(F.pixel_unshuffle(planes, 2)), 2)

    return SideInfoRefiner(int(a["channels"]), int(a["layers"]), a.get("base"))


def input_planes(view, moved, cost, q):
    """Tensors (N x 3 x H x W pixels, N x 3 x H x W, N x 1 x H x W costs, N q values) -> the
    network's float input, in the units the integer network reads exactly."""
    import torch

    n, _, h, w = view.shape
    qp = torch.as_tensor(q, dtype=view.dtype, device=view.device).view(-1, 1, 1, 1)
    return torch.cat([view / PIXEL_SCALE, moved / PIXEL_SCALE, cost / COST_SCALE,
                      (qp / 64.0).expand(n, 1, h, w)], dim=1)


class ExactRefiner:
    """The refiner on integers (`exact.ExactSequential`): inputs in units of 2^-F_IN (pixels
    x 16, costs x 4, q x 64: exact), the correction rounded to whole levels."""

    def __init__(self, refiner):
        import copy

        import torch

        from codecflow.codecs.learned.exact import ExactSequential

        net = copy.deepcopy(refiner.net).to(torch.device("cpu")).double()
        self.net = ExactSequential(net, F_IN, float(2 ** 17), F_OUT, what="side-info refiner")
        self.device = next(refiner.parameters()).device
        self.net = self.net.to(self.device)

    def __call__(self, view: np.ndarray, moved: np.ndarray, cost: np.ndarray,
                 q: int) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        h, w = view.shape[:2]
        hp, wp = h + (h & 1), w + (w & 1)

        def plane(a, mul):
            t = torch.from_numpy(np.ascontiguousarray(a)).to(self.device, torch.float64)
            t = (t.permute(2, 0, 1) if t.dim() == 3 else t[None])[None] * mul
            return F.pad(t, (0, wp - w, 0, hp - h), mode="replicate")

        qs = 2 ** F_IN // 64
        x = torch.cat([plane(view, 2 ** F_IN // PIXEL_SCALE), plane(moved, 2 ** F_IN // PIXEL_SCALE),
                       plane(np.minimum(cost, MAX_COST), 2 ** F_IN // COST_SCALE),
                       torch.full((1, 1, hp, wp), float(q * qs), dtype=torch.float64,
                                  device=self.device)], dim=1)
        with torch.no_grad():
            corr = F.pixel_shuffle(self.net(F.pixel_unshuffle(x, 2)), 2)
        corr = corr[0, :, :h, :w].permute(1, 2, 0).cpu().numpy().astype(np.int32)
        return np.clip(view.astype(np.int32) + corr, 0, 255).astype(np.uint8)


def refine(exact_refiner, view: np.ndarray, other: np.ndarray | None, q: int,
           which: str) -> tuple:
    """Both sides: the decoded ``view`` (uint8 H x W x 3) refined with the ``other`` decoded
    view. ``which``: "left" or "right" (which view ``view`` is; "auto": the direction whose
    whole-picture matching cost is lower). -> (picture, status): status is "refined",
    "no side information", "side information of another size" or "side information
    unrelated"; the picture is the view itself unless refined."""
    if other is None:
        return view, "no side information"
    if other.shape != view.shape:
        return view, "side information of another size"
    other = photometric_match(other, view)
    if which == "auto":
        tries = [match_rows(view, other, s) for s in (-1, +1)]
        moved, cost = min(tries, key=lambda mc: int(mc[1].astype(np.int64).sum()))
    else:
        moved, cost = match_rows(view, other, DIRECTIONS[which])
    if not related(cost):
        return view, "side information unrelated"
    out = exact_refiner(view, moved, cost, q)
    if is_grey(view):
        mean = (out.astype(np.uint16).sum(axis=2) + 1) // 3
        out = np.repeat(mean.astype(np.uint8)[..., None], 3, axis=2)
    return out, "refined"


"""View refinement: a decoded picture improved with a second, aligned decoded picture.

learned-stereo's second view is synthesised from its own latent alone. The decoder also holds
the first view, moved onto the second by the signalled disparity field: where the two views
agree it is a second, independently coded observation of the same scene. A small network
(`ViewRefiner`) takes both pictures and q and adds a correction to the second view (the idea of
the decoder-side view fusion in CAMSIC / LDMIC, here as a cheap pixel-domain stage).

The network works at a quarter of the resolution: both pictures are pixel-unshuffled by 4
(4 x 4 blocks -> 48 channels each), q is one more constant channel, three 3x3 convolutions
with LeakyReLUs predict the 48 channels of a 4 x 4-block correction, which is shuffled back and
added. Decoding evaluates it exactly on integers (`exact.py`): inputs are pixel values in units
of 2^-8 (so the integers are the pixel values and q), the output is the correction rounded to
whole pixel levels. Every machine reproduces the same picture.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SHUFFLE = 4     # the network's grid: blocks of 4 x 4 pixels
IN_FRAC = 8     # integer inputs = pixel values: real inputs are pixel / 2^8 (and q / 2^8)


class ViewRefiner(nn.Module):
    """(decoded picture, aligned other picture, q) -> refined picture (float training form)."""

    def __init__(self, hidden: int = 48, depth: int = 3):
        super().__init__()
        self.hidden, self.depth = int(hidden), int(depth)
        c_in = 2 * 3 * SHUFFLE ** 2 + 1
        c_out = 3 * SHUFFLE ** 2
        layers, c = [], c_in
        for _ in range(self.depth - 1):
            layers += [nn.Conv2d(c, self.hidden, 3, padding=1), nn.LeakyReLU(0.1)]
            c = self.hidden
        layers.append(nn.Conv2d(c, c_out, 3, padding=1))
        self.net = nn.Sequential(*layers)
        with torch.no_grad():  # start as the identity: no correction
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()
        self._exact = None

    # what the refiner was trained on top of, e.g. {"codec": "learned-stereo", "sha256": ...}
    base: dict | None = None

    def architecture(self) -> dict:
        return {"class": "ViewRefiner", "hidden": self.hidden, "depth": self.depth,
                **({"base": dict(self.base)} if self.base else {})}

    @staticmethod
    def inputs(picture: torch.Tensor, aligned: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W pictures (pixel values; H, W multiples of 4) and B q values -> the
        network's input in pixel units (divide by 2^IN_FRAC for the float form)."""
        b, _, h, w = picture.shape
        qs = q.to(picture.dtype).view(-1, 1, 1, 1).expand(b, 1, h // SHUFFLE, w // SHUFFLE)
        return torch.cat([F.pixel_unshuffle(picture, SHUFFLE),
                          F.pixel_unshuffle(aligned, SHUFFLE), qs], 1)

    def forward(self, picture: torch.Tensor, aligned: torch.Tensor,
                q: torch.Tensor) -> torch.Tensor:
        """Float pictures in pixel units (0..255) -> the refined picture (not rounded)."""
        x = self.inputs(picture, aligned, q) / 2.0 ** IN_FRAC
        return picture + F.pixel_shuffle(self.net(x), SHUFFLE) * 2.0 ** IN_FRAC

    # -------------------------------------------------------------------------- exact form
    def exact(self):
        if self._exact is None:
            from codecflow.codecs.learned.exact import ExactSequential

            net = ExactSequential(_cpu_double(self.net), IN_FRAC, 255.0, IN_FRAC,
                                  what="refiner")
            self._exact = net.to(next(self.parameters()).device)
        return self._exact

    def _apply(self, fn, *args, **kwargs):
        self._exact = None  # moved or converted: rebuild the integer layers
        return super()._apply(fn, *args, **kwargs)

    def refine(self, picture: np.ndarray, aligned: np.ndarray, q: int) -> np.ndarray:
        """Decoders: uint8 H x W x 3 RGB picture and aligned other view -> refined uint8
        picture, the same on every machine."""
        h, w = picture.shape[:2]
        dev = next(self.parameters()).device

        def tensor(rgb):
            t = torch.from_numpy(np.ascontiguousarray(rgb)).to(dev).permute(2, 0, 1)[None]
            return pad_to(t.to(torch.float64), SHUFFLE)

        p = tensor(picture)
        with torch.no_grad():
            x = self.inputs(p, tensor(aligned), torch.tensor([float(q)], device=dev,
                                                              dtype=torch.float64))
            out = p + F.pixel_shuffle(self.exact()(x), SHUFFLE)
        out = out.clamp_(0, 255)[0, :, :h, :w].permute(1, 2, 0)
        return np.ascontiguousarray(out.to(torch.uint8).cpu().numpy())


def _cpu_double(seq: nn.Sequential) -> nn.Sequential:
    import copy

    return copy.deepcopy(seq).to(torch.device("cpu")).double()


def pad_to(t: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the bottom and right of a B x C x H x W tensor to multiples."""
    h, w = t.shape[2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(t, (0, pw, 0, ph), mode="replicate") if ph or pw else t


def build_refiner(arch: dict) -> ViewRefiner:
    model = ViewRefiner(arch.get("hidden", 48), arch.get("depth", 3))
    model.base = arch.get("base")
    return model

"""Exact integer arithmetic for everything a learned decoder must reproduce bit for bit.

Why: a decoder must compute the same entropy parameters (CDF index and mean of every latent)
as the encoder, on any machine, thread count and picture size. Float arithmetic cannot promise
that: a reduction (conv, matmul) sums in an order that depends on the thread partition and the
CPU's vector width, and even element-wise float32 functions differ in the last bit between the
vector and the scalar code path of one library (measured: softplus on 465 and sigmoid on 151 of
4,096 values). One flipped index desynchronises the rANS decoder, and the picture turns to noise.

How: a trained float layer is turned into an integer layer once, at load time (deterministic:
only exact operations are used), and evaluated on integers:

* weights:     W_int = round(w * 2^s_c), s_c per output channel chosen with `frexp` (exact) so
               that |W_int| < 2^WEIGHT_BITS; bias B_int = round(b * 2^(f_in + s_c)).
* activations: integers in units of 2^-ACT_FRAC, clamped to +-ACT_LIMIT.
* a conv:      acc = sum(W_int * a_int) + B_int. Every product and partial sum is an integer
               below 2^53, so float64 holds each one exactly and the sum is the same in any
               order: any conv / gemm kernel, any thread count, CPU or GPU (cuDNN is bypassed so
               that no Winograd or FFT algorithm is chosen). The bound is checked per output
               channel when the layer is built (`ExactnessError` otherwise).
* rescaling:   out = floor(acc * 2^(f_out - f_in - s_c) + 1/2), clamped (power-of-two scaling,
               exact).
* element-wise non-linearities use single IEEE-754 operations (multiply, sqrt), which are
               correctly rounded on every conforming machine, followed by a floor.

The same rules make the synthesis transform exact, so a stream decodes to the same pixels on
every machine, not only to the same symbols.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from codecflow.errors import CodecError

ACT_FRAC = 12            # activations: units of 2^-12
ACT_LIMIT = 2.0 ** 30    # |activation| <= 2^18 in real units: far beyond what trained nets reach
WEIGHT_BITS = 14         # |W_int| < 2^14 per output channel
BIAS_BITS = 50           # |B_int| < 2^50
SQ_FRAC = 8              # squared activations inside (I)GDN: units of 2^-8
SQ_LIMIT = 2.0 ** 32     # ... clamped to 2^24 in real units (|x| <= 4096)
GDN_WEIGHT_BITS = 12
EXACT = 2.0 ** 53        # integers below this are exact in float64
BAND_PIXELS = 1 << 20    # output pixels per band of a banded synthesis (`in_bands`)


class ExactnessError(CodecError):
    """An integer layer cannot guarantee exact float64 accumulation for its weights."""


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5)


def channel_shift(w: torch.Tensor, out_dim: int, bits: int) -> torch.Tensor:
    """Per output channel exponent s such that max|w| * 2^s < 2^bits (exact, via frexp)."""
    dims = [d for d in range(w.dim()) if d != out_dim]
    amax = w.abs().amax(dim=dims) if dims else w.abs()
    _, e = torch.frexp(amax)  # amax = m * 2^e, m in [0.5, 1)
    return torch.where(amax > 0, bits - e, torch.zeros_like(e)).to(torch.float64)


def cudnn_off(device: torch.device):
    return (torch.backends.cudnn.flags(enabled=False) if device.type == "cuda"
            else contextlib.nullcontext())


class ExactConv:
    """A Conv2d or ConvTranspose2d evaluated on integers (see module doc)."""

    def __init__(self, layer: nn.Module, f_in: int, f_out: int, in_limit: float,
                 out_limit: float = ACT_LIMIT, what: str = "layer"):
        self.transposed = isinstance(layer, nn.ConvTranspose2d)
        w = layer.weight.detach().to(torch.float64)
        out_dim = 1 if self.transposed else 0
        s = channel_shift(w, out_dim, WEIGHT_BITS)
        b = (layer.bias.detach().to(torch.float64) if layer.bias is not None
             else torch.zeros_like(s))
        # a channel with tiny weights and a large bias: cap its shift so that the bias stays
        # below 2^BIAS_BITS (never binds where the uncapped layer is exact)
        _, e_b = torch.frexp(b.abs())
        s = torch.where(b != 0, torch.minimum(s, (BIAS_BITS - f_in - e_b).to(s.dtype)), s)
        shape = [1] * w.dim()
        shape[out_dim] = -1
        self.w = round_half_up(w * torch.exp2(s).view(shape))
        self.b = round_half_up(b * torch.exp2(s + f_in)).view(1, -1, 1, 1)
        self.rescale = torch.exp2(f_out - f_in - s).view(1, -1, 1, 1)
        self.stride, self.padding = layer.stride, layer.padding
        self.output_padding = getattr(layer, "output_padding", 0)
        self.out_limit = float(out_limit)
        # the largest |input| for which every partial sum stays below 2^53 (one IEEE divide)
        l1 = float(self.w.abs().sum(dim=[d for d in range(w.dim()) if d != out_dim]).max())
        safe = float(torch.floor(torch.tensor((EXACT - 1 - float(self.b.abs().max()))
                                              / max(l1, 1.0), dtype=torch.float64)))
        if safe < 2.0 ** (f_in + 8):
            raise ExactnessError(f"{what}: weights too large for exact integer decoding "
                                 f"(inputs would have to stay below {safe / 2 ** f_in:g}, "
                                 f"sums below 2^53)")
        # inputs beyond it are clamped (a trained net never gets near: see ACT_LIMIT)
        self.clamp_in = safe if safe < in_limit else None

    def to(self, device) -> "ExactConv":
        for k in ("w", "b", "rescale"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        if self.clamp_in is not None:
            a = a.clamp(-self.clamp_in, self.clamp_in)
        with cudnn_off(a.device):
            if self.transposed:
                acc = F.conv_transpose2d(a, self.w, None, self.stride, self.padding,
                                         self.output_padding)
            else:
                acc = F.conv2d(a, self.w, None, self.stride, self.padding)
        acc.add_(self.b).mul_(self.rescale).add_(0.5).floor_()  # exact: power-of-two scale
        return acc.clamp_(-self.out_limit, self.out_limit)


class ExactLeakyReLU:
    def __init__(self, layer: nn.LeakyReLU):
        self.slope = float(layer.negative_slope)

    def to(self, device) -> "ExactLeakyReLU":
        return self

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        return torch.where(a >= 0, a, round_half_up(a * self.slope))


class ExactGDN:
    """GDN / inverse GDN: x * rsqrt|sqrt(beta + gamma (x) x^2) on integers.

    x^2 is taken exactly and rounded to units of 2^-SQ_FRAC, the 1x1 conv with gamma is exact,
    and the normalisation is one IEEE sqrt, one division (GDN) and one multiply per element.
    """

    def __init__(self, gdn: nn.Module, f: int, what: str = "GDN"):
        c = gdn.beta.numel()
        beta = gdn.beta_reparam(gdn.beta).detach().to(torch.float64)
        gamma = gdn.gamma_reparam(gdn.gamma).detach().to(torch.float64).reshape(c, c, 1, 1)
        s = channel_shift(gamma, 0, GDN_WEIGHT_BITS)
        # a channel whose gamma row is tiny next to its beta gets a large shift that would
        # push beta's integer past 2^53: lower that channel's shift one bit at a time until
        # the channel's worst sum fits (never changes a channel that fits already)
        for _ in range(2100):  # more than float64's exponent range
            g_int = round_half_up(gamma * torch.exp2(s).view(-1, 1, 1, 1))
            b_int = round_half_up(beta * torch.exp2(s + SQ_FRAC))
            worst = g_int.abs().sum(dim=[1, 2, 3]) * SQ_LIMIT + b_int.abs()
            over = worst >= EXACT
            if not bool(over.any()):
                break
            s = torch.where(over, s - 1, s)
        self.gamma, self.beta = g_int, b_int.view(1, -1, 1, 1)
        self.unscale = torch.exp2(-(s + SQ_FRAC)).view(1, -1, 1, 1)
        self.inverse, self.f = bool(gdn.inverse), f
        if bool(over.any()):
            raise ExactnessError(f"{what}: weights too large for exact integer decoding")

    def to(self, device) -> "ExactGDN":
        for k in ("gamma", "beta", "unscale"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        # a * a is one correctly rounded multiply; only the sum below must be exact
        sq = torch.mul(a, a).mul_(2.0 ** (SQ_FRAC - 2 * self.f)).add_(0.5).floor_()
        sq.clamp_(max=SQ_LIMIT)
        with cudnn_off(a.device):
            norm = F.conv2d(sq, self.gamma)
        del sq
        norm.add_(self.beta).mul_(self.unscale).sqrt_()
        norm = norm.mul_(a) if self.inverse else torch.div(a, norm)
        return norm.add_(0.5).floor_().clamp_(-ACT_LIMIT, ACT_LIMIT)


class ExactSequential:
    """An nn.Sequential of convs, transposed convs, LeakyReLUs and (I)GDNs, made exact.

    Input integers have ``f_in`` fractional bits and are bounded by ``in_limit``; the output has
    ``f_out`` fractional bits. Hidden activations use ACT_FRAC.
    """

    def __init__(self, seq, f_in: int, in_limit: float, f_out: int = ACT_FRAC,
                 what: str = "net"):
        from compressai.layers import GDN

        layers = list(seq)
        convs = [i for i, m in enumerate(layers) if isinstance(m, (nn.Conv2d,
                                                                   nn.ConvTranspose2d))]
        self.ops, f, limit = [], f_in, float(in_limit)
        for i, m in enumerate(layers):
            name = f"{what}[{i}]"
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fo = f_out if i == convs[-1] else ACT_FRAC
                self.ops.append(ExactConv(m, f, fo, limit, what=name))
                f, limit = fo, ACT_LIMIT
            elif isinstance(m, nn.LeakyReLU):
                self.ops.append(ExactLeakyReLU(m))
            elif isinstance(m, GDN):
                self.ops.append(ExactGDN(m, f, what=name))
            else:
                raise ExactnessError(f"{name}: {type(m).__name__} has no exact integer form")
        self.f_out = f_out

    def to(self, device) -> "ExactSequential":
        self.ops = [op.to(device) for op in self.ops]
        return self

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            a = op(a)
        return a

    def row_halo(self) -> int:
        """Input rows on either side that a band must carry (`in_bands`) so that the rows it
        keeps are computed as without bands: the net's reach across rows (each layer's kernel
        radius in input rows, rounded up, summed in the net's input units)."""
        reach, res = 0.0, 1.0  # res: resolution of the current activations / the input's
        for op in self.ops:
            if isinstance(op, ExactConv):
                k, st = op.w.shape[-2], op.stride[0]
                if op.transposed:
                    reach += math.ceil((k // 2) / st) / res
                    res *= st
                else:
                    reach += (k // 2) / res
                    res /= st
        return math.ceil(reach)


class ScaleIndex:
    """CompressAI's scale -> CDF index rule (index = number of table entries below the scale;
    "scale <= t_k" counts down), evaluated exactly on integer scales with ``frac`` fractional
    bits: "s_int * 2^-frac <= t_k" is "s_int <= floor(t_k * 2^frac)"."""

    def __init__(self, scale_table: torch.Tensor, frac: int = ACT_FRAC):
        table = scale_table.to(torch.float64)
        self.thresholds = torch.floor(table[:-1] * 2.0 ** frac)
        self.levels = int(table.numel())

    def to(self, device) -> "ScaleIndex":
        self.thresholds = self.thresholds.to(device)
        return self

    def __call__(self, scales: torch.Tensor) -> torch.Tensor:
        idx = torch.full_like(scales, self.levels - 1, dtype=torch.int32)
        for t in self.thresholds:
            idx -= (scales <= t).to(torch.int32)
        return idx.contiguous()


def in_bands(net, a: torch.Tensor, scale: int, halo: int, band_pixels: int | None = None):
    """``net(a)`` computed band by band over the rows of ``a`` (1 x C x h x w), each band with
    ``halo`` more input rows on either side, its output rows outside the band dropped; ``net``
    maps h input rows to h * scale output rows. With integer layers and a halo that covers
    the net's reach across rows, every output element is computed from the same integers in
    the same way as without bands: the result is identical, and memory stays bounded by the
    band size (a 4K picture's synthesis would otherwise take several GB)."""
    h, w = a.shape[-2:]
    rows = max(1, (band_pixels or BAND_PIXELS) // max(1, w * scale * scale))
    if rows >= h:
        return net(a)
    outs = []
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        s0, s1 = max(0, r0 - halo), min(h, r1 + halo)
        outs.append(net(a[..., s0:s1, :])[..., (r0 - s0) * scale:(r1 - s0) * scale, :])
    return torch.cat(outs, dim=-2)


def hard_sigmoid(a: torch.Tensor, frac: int = ACT_FRAC) -> torch.Tensor:
    """clamp(x / 4 + 1/2, 0, 1) on integers with ``frac`` fractional bits (exact): the
    mask non-linearity of the conditional coder (a sigmoid is not exactly computable)."""
    return torch.floor(a * 0.25 + 2.0 ** (frac - 1) + 0.5).clamp_(0, 2.0 ** frac)


def to_fixed(x: torch.Tensor, frac: int, limit: float = ACT_LIMIT) -> torch.Tensor:
    """Float tensor -> float64 integers in units of 2^-frac (exact for float32 inputs)."""
    return round_half_up(x.to(torch.float64) * 2.0 ** frac).clamp_(-limit, limit)

"""The conditional latent coder: code a latent y given a condition the decoder already has.

One mechanism for the stereo, video, base-layer and structure/signal codecs (DESIGN.md,
"Conditional learned codecs"). The condition c lives on y's latent grid (the analysis of the
other view's decoded picture aligned by disparity, or of the previous decoded frame moved by
motion, an upsampled base layer...) and is given as integers (float64 tensors holding integers in units of
2^-``c_frac``), so that encoder and decoder see the same condition bit for bit.

    f    = c_net(c)                   condition features           (decoder has them)
    p    = pred(f)                    prediction of y from c       (decoder has it)
    z    = h_a([y, p])                hyper-latent                 (encoder only, float)
    hyp  = h_s(z_hat)                 hyperprior                   (decoder has it)
    m    = hard_sigmoid(mask([hyp, f]))   soft mask in [0, 1]      (decoder has it)
    r    = y - m * p                  what gets coded: m = 0 is conditional coding of y,
                                      m = 1 conditional residual coding of y - p
    r is coded with a checkerboard context: anchors with parameters from ep([hyp, f, 0]),
    non-anchors from ep([hyp, f, ctx(anchors)]); means snapped to the 1/16 grid.
    y_hat = r_hat + m * p

Training runs the float modules (`forward`); coding runs their exact integer twins
(`exact.py`), like learned-intra: the mask uses a hard sigmoid, the one non-linearity here
that has an exact integer form. Unlike MaskCRT, whose mask lies in [0.5, 1), m spans [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models.base import get_scale_table
from torch import nn

from codecflow.codecs.learned.exact import (
    ACT_FRAC, ACT_LIMIT, ExactConv, ExactSequential, ScaleIndex, hard_sigmoid, round_half_up,
    to_fixed)
from codecflow.codecs.learned.layers import (
    MEAN_STEP, anchor_mask, cb_gather, cb_scatter, conv, deconv, grid_means, ste_round)
from codecflow.codecs.learned.model import (
    Y_FRAC, entropy_tables, load_entropy_tables, snap_means, symbols_crc)

LATENT_STRIDE = 4  # the hyper-latent is 1/4 of the latent grid: latents must be multiples of 4


def float_hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return (x * 0.25 + 0.5).clamp(0.0, 1.0)


class ConditionalLatentCoder(nn.Module):
    """Codes an M-channel latent given a C-channel condition on the same grid."""

    def __init__(self, M: int, C: int, N: int = 64, F_: int = 64, H: int | None = None,
                 E: int | None = None, skip: bool | None = None):
        super().__init__()
        # skip: the prediction is the condition plus a learned correction (p = c + pred(f)),
        # for conditions that already live in y's units (the analysis of an aligned picture)
        self.skip = bool(C == M if skip is None else skip)
        if self.skip and C != M:
            raise ValueError(f"a skip prediction needs the condition in y's channels ({C} != "
                             f"{M})")
        H = int(H or N)          # hyper-synthesis hidden channels
        E = int(E or 2 * M)      # entropy-parameter net's middle width
        self.M, self.C, self.N, self.F, self.H, self.E = int(M), int(C), int(N), int(F_), H, E
        self.c_net = nn.Sequential(
            conv(C, F_, 3, 1), nn.LeakyReLU(inplace=True), conv(F_, F_, 3, 1),
            nn.LeakyReLU(inplace=True), conv(F_, F_, 3, 1))
        self.pred = conv(F_, M, 3, 1)
        self.h_a = nn.Sequential(
            conv(2 * M, N, 3, 1), nn.LeakyReLU(inplace=True), conv(N, N),
            nn.LeakyReLU(inplace=True), conv(N, N))
        self.h_s = nn.Sequential(
            deconv(N, N), nn.LeakyReLU(inplace=True), deconv(N, H),
            nn.LeakyReLU(inplace=True), conv(H, 2 * M, 3, 1))
        self.mask = nn.Sequential(
            nn.Conv2d(2 * M + F_, N, 1), nn.LeakyReLU(inplace=True), nn.Conv2d(N, M, 1))
        self.ctx = conv(M, 2 * M, 5, 1)
        self.ep = nn.Sequential(
            nn.Conv2d(4 * M + F_, 3 * M, 1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(3 * M, E, 1), nn.LeakyReLU(inplace=True), nn.Conv2d(E, 2 * M, 1))
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)
        # learned-intra's gains per q (units of 2^-16), for conditions computed by its
        # analysis transform: set from the intra model a run starts from, shipped with it
        self.register_buffer("cond_gain", torch.zeros(64, M, dtype=torch.int32))
        self._exact = None

    # what the coder was trained on top of, e.g. {"codec": "learned-intra", "sha256": ...}
    base: dict | None = None

    def architecture(self) -> dict:
        return {"class": "ConditionalLatentCoder", "M": self.M, "C": self.C, "N": self.N,
                "F": self.F, "H": self.H, "E": self.E, "skip": self.skip,
                **({"base": dict(self.base)} if self.base else {})}

    @torch.no_grad()
    def init_from_intra(self, intra) -> None:
        """Start as learned-intra's own entropy model: its hyper networks, context and
        entropy-parameter weights copied, the condition's inputs to them zero, the prediction
        zero and the mask small (0.1). The coder then codes y exactly as learned-intra does, and
        training only has to learn what the condition adds. Needs matching widths (N, H = the
        intra model's hyper widths, E = its entropy-parameter middle width)."""
        M, F_ = self.M, self.F
        if intra.M != M:
            raise ValueError(f"intra latent has {intra.M} channels, the coder {M}")
        self.h_a[0].weight.zero_()
        self.h_a[0].weight[:, :M] = intra.h_a[0].weight
        self.h_a[0].bias.copy_(intra.h_a[0].bias)
        for i in (2, 4):
            self.h_a[i].load_state_dict(intra.h_a[i].state_dict())
        self.h_s.load_state_dict(intra.h_s.state_dict())
        self.ctx.load_state_dict(intra.ctx.state_dict())
        w = intra.ep[0].weight
        self.ep[0].weight.zero_()
        self.ep[0].weight[:, :2 * M] = w[:, :2 * M]
        self.ep[0].weight[:, 2 * M + F_:] = w[:, 2 * M:]
        self.ep[0].bias.copy_(intra.ep[0].bias)
        for i in (2, 4):
            self.ep[i].load_state_dict(intra.ep[i].state_dict())
        from codecflow.codecs.learned.weights import strip_cdf_buffers

        eb = strip_cdf_buffers(intra.entropy_bottleneck.state_dict())
        nn.Module.load_state_dict(self.entropy_bottleneck, eb, strict=False)
        self.pred.weight.zero_()
        self.pred.bias.zero_()
        self.mask[2].weight.zero_()
        self.mask[2].bias.fill_(-1.6)  # hard sigmoid(-1.6) = 0.1: inside its linear part
        from codecflow.codecs.learned.model import inv_gain_table

        self.cond_gain.copy_(inv_gain_table(intra, forward=True))

    # ---------------------------------------------------------------- training (float)
    def _params(self, hyper, f, ctx):
        scales, means = self.ep(torch.cat([hyper, f, ctx], 1)).chunk(2, 1)
        return scales, grid_means(means)

    def forward(self, y: torch.Tensor, c: torch.Tensor) -> dict:
        """y: B x M x h x w (float), c: B x C x h x w condition in real units -> y_hat (with
        straight-through rounding), likelihoods {"y", "z"} for the rate, and the mask."""
        f = self.c_net(c)
        p = self.pred(f) + c if self.skip else self.pred(f)
        z = self.h_a(torch.cat([y, p], 1))
        _, z_lik = self.entropy_bottleneck(z)
        med = self.entropy_bottleneck._get_medians().detach().view(1, -1, 1, 1)
        z_hat = ste_round(z - med) + med
        hyper = self.h_s(z_hat)
        m = float_hard_sigmoid(self.mask(torch.cat([hyper, f], 1)))
        r = y - m * p
        am = anchor_mask(y.shape[2], y.shape[3], y.device, y.dtype)
        s_a, mu_a = self._params(hyper, f, torch.zeros_like(hyper))
        r_hat_a = (ste_round(r - mu_a) + mu_a) * am
        s_n, mu_n = self._params(hyper, f, self.ctx(r_hat_a))
        scales, means = s_a * am + s_n * (1 - am), mu_a * am + mu_n * (1 - am)
        _, r_lik = self.gaussian_conditional(r, scales, means)
        r_hat = ste_round(r - means) + means
        return {"y_hat": r_hat + m * p, "likelihoods": {"y": r_lik, "z": z_lik}, "mask": m}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's, minus the CDF tables (sizes vary; rebuilt by `build_tables` or
        loaded by `load_tables`)."""
        from codecflow.codecs.learned.weights import nn_load, strip_cdf_buffers

        missing, unexpected = nn_load(self, strip_cdf_buffers(state_dict))
        if strict and (missing or unexpected):
            raise RuntimeError(f"state does not fit ConditionalLatentCoder: missing {missing[:5]}"
                               f", unexpected {list(unexpected)[:5]}")
        self._exact = None
        return missing, unexpected

    def aux_loss(self) -> torch.Tensor:
        """The EntropyBottleneck's quantile loss (trained with its own optimizer)."""
        return self.entropy_bottleneck.loss()

    # ---------------------------------------------------------------- coding tables
    def build_tables(self) -> None:
        self.entropy_bottleneck.update(force=True)
        self.gaussian_conditional.update_scale_table(get_scale_table(), force=True)
        self._exact = None

    def coding_tables(self) -> dict:
        return entropy_tables(self.entropy_bottleneck, self.gaussian_conditional)

    def load_tables(self, tables: dict) -> None:
        load_entropy_tables(self.entropy_bottleneck, self.gaussian_conditional, tables)
        self._exact = None

    def exact(self, c_frac: int) -> "ExactConditional":
        if self._exact is None or self._exact.c_frac != c_frac:
            self._exact = ExactConditional(self, c_frac)
        return self._exact

    # ---------------------------------------------------------------- coding (exact)
    @torch.no_grad()
    def compress(self, y: torch.Tensor, c_int: torch.Tensor, c_frac: int) -> dict:
        """y: 1 x M x h x w float (h, w multiples of 4); c_int: the condition as integers in
        units of 2^-c_frac. -> {"strings": [z, r anchors, r non-anchors], "z_shape",
        "y_hat": integers in units of 2^-ACT_FRAC, "symbols_crc"}."""
        ex = self.exact(c_frac)
        f, p = ex.condition(c_int)
        z = self.h_a(torch.cat([y, p / 2.0 ** ACT_FRAC], 1).float())
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        z_str = eb.compress(z)
        z_hat = eb.decompress(z_str, tuple(z.shape[2:]))
        hyper, mp = ex.hyper_and_mask(z_hat, f, p)
        r = y.to(torch.float64) - mp / 2.0 ** ACT_FRAC
        strings, r16 = [z_str[0]], torch.zeros_like(mp)
        for anchors in (True, False):
            idx, mu16 = ex.params(hyper, f, None if anchors else r16)
            idx, mu16 = cb_gather(idx, anchors), cb_gather(mu16, anchors)
            mu = (mu16 * MEAN_STEP).float()
            part = cb_gather(r, anchors).float()
            strings.append(gc.compress(part, idx, mu)[0])
            sym = gc.quantize(part, "symbols", mu).to(torch.float64)
            cb_scatter(ex.latent16(sym, mu16), r16, anchors)
        return {"strings": strings, "z_shape": tuple(z.shape[2:]),
                "y_hat": ex.combine(r16, mp), "symbols_crc": symbols_crc(z_hat, r16)}

    @torch.no_grad()
    def decompress(self, strings: list, z_shape: tuple, c_int: torch.Tensor,
                   c_frac: int) -> tuple:
        """-> (y_hat: integers in units of 2^-ACT_FRAC, CRC-32 of the quantised latents)."""
        ex = self.exact(c_frac)
        f, p = ex.condition(c_int)
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        z_hat = eb.decompress([strings[0]], tuple(z_shape))
        hyper, mp = ex.hyper_and_mask(z_hat, f, p)
        r16 = torch.zeros_like(mp)
        for anchors, string in ((True, strings[1]), (False, strings[2])):
            idx, mu16 = ex.params(hyper, f, None if anchors else r16)
            idx, mu16 = cb_gather(idx, anchors), cb_gather(mu16, anchors)
            sym = gc.decompress([string], idx).to(torch.float64)
            cb_scatter(ex.latent16(sym, mu16), r16, anchors)
        return ex.combine(r16, mp), symbols_crc(z_hat, r16)


class ExactConditional:
    """The integer twin of a `ConditionalLatentCoder` (everything the decoder computes)."""

    R_LIMIT = 2.0 ** 24  # |r| <= 2^20 in 1/16 units
    # a fixed mask (0: conditional coding, 1: conditional residual coding) instead of the
    # learned one; for ablations: streams coded with it decode only with the same setting
    mask_override: float | None = None

    def __init__(self, coder: ConditionalLatentCoder, c_frac: int):
        dev = coder.gaussian_conditional.scale_table.device
        self.c_frac, self.skip = int(c_frac), coder.skip
        if self.skip and self.c_frac > ACT_FRAC:
            raise ValueError(f"condition fraction bits {c_frac} > {ACT_FRAC}")
        self.c_net = ExactSequential(coder.c_net, c_frac, ACT_LIMIT, what="c_net").to(dev)
        self.pred = ExactConv(coder.pred, ACT_FRAC, ACT_FRAC, ACT_LIMIT, what="pred").to(dev)
        self.h_s = ExactSequential(coder.h_s, ACT_FRAC, ACT_LIMIT, what="h_s").to(dev)
        self.mask = ExactSequential(coder.mask, ACT_FRAC, ACT_LIMIT, what="mask").to(dev)
        self.ctx = ExactConv(coder.ctx, Y_FRAC, ACT_FRAC, self.R_LIMIT, what="ctx").to(dev)
        self.ep = ExactSequential(coder.ep, ACT_FRAC, ACT_LIMIT, what="ep").to(dev)
        self.scale_index = ScaleIndex(coder.gaussian_conditional.scale_table).to(dev)

    def condition(self, c_int: torch.Tensor) -> tuple:
        f = self.c_net(c_int.to(torch.float64))
        p = self.pred(f)
        if self.skip:  # + c in units of 2^-ACT_FRAC (exact: a power-of-two scaling)
            p = p + c_int.to(torch.float64) * 2.0 ** (ACT_FRAC - self.c_frac)
        return f, p

    def hyper_and_mask(self, z_hat: torch.Tensor, f: torch.Tensor, p: torch.Tensor) -> tuple:
        """-> (hyperprior, m * p), both integers in units of 2^-ACT_FRAC."""
        hyper = self.h_s(to_fixed(z_hat, ACT_FRAC))
        m = hard_sigmoid(self.mask(torch.cat([hyper, f], 1)))
        if self.mask_override is not None:  # ablations (bench/mask_ablation.py) only
            m = torch.full_like(m, float(self.mask_override) * 2.0 ** ACT_FRAC)
        return hyper, round_half_up(m * p * 2.0 ** -ACT_FRAC)

    def params(self, hyper: torch.Tensor, f: torch.Tensor, r16: torch.Tensor | None) -> tuple:
        ctx = torch.zeros_like(hyper) if r16 is None else self.ctx(r16)
        scales, means = self.ep(torch.cat([hyper, f, ctx], 1)).chunk(2, 1)
        return self.scale_index(scales), snap_means(means)

    def latent16(self, symbols: torch.Tensor, mu16: torch.Tensor) -> torch.Tensor:
        return (symbols * 2.0 ** Y_FRAC + mu16).clamp_(-self.R_LIMIT, self.R_LIMIT)

    @staticmethod
    def combine(r16: torch.Tensor, mp: torch.Tensor) -> torch.Tensor:
        return r16 * 2.0 ** (ACT_FRAC - Y_FRAC) + mp


def build_coder(arch: dict) -> ConditionalLatentCoder:
    coder = ConditionalLatentCoder(arch["M"], arch["C"], arch.get("N", 64), arch.get("F", 64),
                                   arch.get("H"), arch.get("E"), arch.get("skip"))
    coder.base = arch.get("base")
    return coder


def pad_latent(t: torch.Tensor) -> torch.Tensor:
    """Replicate-pad a latent-grid tensor to multiples of LATENT_STRIDE."""
    h, w = t.shape[2:]
    ph, pw = (-h) % LATENT_STRIDE, (-w) % LATENT_STRIDE
    return F.pad(t, (0, pw, 0, ph), mode="replicate") if ph or pw else t

"""The learned intra image model: a compact variable-rate hyperprior + checkerboard codec.

Architecture (N, M channels; see docs/training.md):

* ``g_a``: 4 stride-2 5x5 convs with GDN -> latent y (M channels, 1/16 resolution).
* gain: y is multiplied by a learned per-channel gain vector before quantization and the
  decoded latent by a learned inverse gain after it (one pair per rate anchor; q interpolates
  between neighbouring anchors exponentially), so one model covers the whole q range 0..63.
* ``h_a`` / ``h_s``: hyperprior z (N channels, 1/64 resolution) coded with an
  `EntropyBottleneck`.
* y is coded with a mean-scale `GaussianConditional` in two parallel checkerboard passes:
  anchors with parameters from the hyperprior alone, non-anchors with parameters from the
  hyperprior plus a 5x5 context conv over the decoded anchors.
* ``g_s``: mirror of g_a with IGDN.

All entropy coding is CompressAI's rANS (`EntropyBottleneck.compress`,
`GaussianConditional.compress` with indexes), in fp32.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN
from compressai.models.base import CompressionModel, get_scale_table
from torch import nn

from codecflow.codecs.learned.exact import (
    ACT_FRAC, ACT_LIMIT, ExactConv, ExactSequential, ScaleIndex, in_bands, round_half_up,
    to_fixed)
from codecflow.codecs.learned.layers import (
    MEAN_STEP, anchor_mask, cb_gather, cb_scatter, conv, deconv, grid_means, ste_round)

STRIDE = 64  # total down-sampling incl. the hyperprior: pad pictures to a multiple of this
Y_STRIDE = 16  # the latent y's down-sampling
Y_FRAC = 4  # decoded latents lie on the 1/16 grid of the snapped means (MEAN_STEP)
Y_LIMIT = 2.0 ** 24  # |latent| <= 2^20
IG_FRAC = 16  # inverse gains: units of 2^-16
DEFAULT_LAMBDAS = (0.0018, 0.0048, 0.0130, 0.0348, 0.0932)
Q_MAX = 63
REFINE_LR = 0.006  # first Adam step on the latent for `refined_latent`, decayed linearly to 0
# over the steps (measured: docs/codecs.md)


class IntraModel(CompressionModel):
    def __init__(self, N: int = 64, M: int = 128, lambdas=DEFAULT_LAMBDAS):
        super().__init__()
        self.N, self.M = int(N), int(M)
        self.lambdas = tuple(float(v) for v in lambdas)
        K = len(self.lambdas)
        self.g_a = nn.Sequential(
            conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True), deconv(N, 3))
        self.h_a = nn.Sequential(
            conv(M, N, 3, 1), nn.LeakyReLU(inplace=True), conv(N, N), nn.LeakyReLU(inplace=True),
            conv(N, N))
        H = N * 3 // 2
        self.h_s = nn.Sequential(
            deconv(N, N), nn.LeakyReLU(inplace=True), deconv(N, H), nn.LeakyReLU(inplace=True),
            conv(H, 2 * M, 3, 1))
        self.ctx = conv(M, 2 * M, 5, 1)
        self.ep = nn.Sequential(
            nn.Conv2d(4 * M, 3 * M, 1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(3 * M, 5 * M // 2, 1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(5 * M // 2, 2 * M, 1))
        # per-anchor gains (log domain); initialised to a sqrt(lambda) ladder
        lam = torch.tensor(self.lambdas)
        init = 0.5 * torch.log(lam / lam[K // 2])
        self.log_gain = nn.Parameter(init.view(K, 1).repeat(1, M).clone())
        self.log_inv_gain = nn.Parameter((-init).view(K, 1).repeat(1, M).clone())
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)

    # ---------------------------------------------------------------- rate control
    @property
    def K(self) -> int:
        return len(self.lambdas)

    def q_to_pos(self, q) -> float:
        return float(q) / Q_MAX * (self.K - 1)

    def pos_to_lambda(self, pos: torch.Tensor) -> torch.Tensor:
        """Rate position(s) in [0, K-1] -> lambda (log-linear between anchors)."""
        lam = torch.log(torch.tensor(self.lambdas, device=pos.device))
        a = pos.floor().clamp(0, self.K - 2).long()
        t = pos - a
        return torch.exp(lam[a] * (1 - t) + lam[a + 1] * t)

    def gains(self, pos: torch.Tensor):
        """pos: (B,) rate positions in [0, K-1] -> (gain, inverse gain), each B x M x 1 x 1."""
        a = pos.floor().clamp(0, self.K - 2).long()
        t = (pos - a).view(-1, 1)
        g = torch.exp(self.log_gain[a] * (1 - t) + self.log_gain[a + 1] * t)
        ig = torch.exp(self.log_inv_gain[a] * (1 - t) + self.log_inv_gain[a + 1] * t)
        return g[..., None, None], ig[..., None, None]

    # ---------------------------------------------------------------- shared pieces
    def _params(self, hyper: torch.Tensor, ctx: torch.Tensor):
        scales, means = self.ep(torch.cat([hyper, ctx], dim=1)).chunk(2, 1)
        return scales, grid_means(means)

    # ---------------------------------------------------------------- training
    def forward(self, x: torch.Tensor, pos: torch.Tensor,
                amp_dtype: torch.dtype | None = None) -> dict:
        """Training forward pass (noise for the rates, rounding with straight-through gradients
        for the reconstruction). ``amp_dtype`` (e.g. torch.bfloat16): run the transforms
        g_a, h_a, h_s and g_s under autocast; the entropy models, the gains and the entropy
        parameter network always run in fp32."""
        def low():
            return (torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype is not None
                    else contextlib.nullcontext())

        g, ig = self.gains(pos)
        with low():
            y = self.g_a(x)
        return self._from_latent(y.float() * g, ig, low)

    def _from_latent(self, y: torch.Tensor, ig: torch.Tensor, low, noise=None) -> dict:
        """The part of `forward` after the analysis: a gained latent y -> reconstruction and
        likelihoods (straight-through rounding for the picture; for the rates noise in
        training mode or with ``noise=True``, rounding otherwise)."""
        with low():
            z = self.h_a(y)
        z = z.float()
        _, z_lik = self.entropy_bottleneck(z, training=noise)
        med = self.entropy_bottleneck._get_medians().detach().view(1, -1, 1, 1)
        z_hat = ste_round(z - med) + med
        with low():
            hyper = self.h_s(z_hat)
        hyper = hyper.float()
        mask = anchor_mask(y.shape[2], y.shape[3], y.device, y.dtype)
        s_a, m_a = self._params(hyper, torch.zeros_like(hyper))
        y_hat_a = (ste_round(y - m_a) + m_a) * mask
        s_n, m_n = self._params(hyper, self.ctx(y_hat_a))
        scales = s_a * mask + s_n * (1 - mask)
        means = m_a * mask + m_n * (1 - mask)
        _, y_lik = self.gaussian_conditional(y, scales, means, training=noise)
        y_hat = ste_round(y - means) + means
        with low():
            x_hat = self.g_s(y_hat * ig)
        return {"x_hat": x_hat.float(), "likelihoods": {"y": y_lik, "z": z_lik}}

    def refined_latent(self, x: torch.Tensor, q: int, steps: int, size: tuple | None = None,
                       source: torch.Tensor | None = None, lr: float = REFINE_LR) -> torch.Tensor:
        """Encoder-side search for a better latent than g_a's: ``steps`` Adam steps on the
        gained latent itself (step ``lr``, decayed linearly to 0), minimising the training
        loss (lambda(q) * 255^2 * MSE + bits per coded pixel estimated by the entropy models)
        with the weights fixed; 0 steps: the analysis's latent. The decoder is unchanged: it
        decodes whatever latent was coded. x as for `compress`; ``size`` (h, w): the picture
        inside the padding, the only part whose distortion counts. ``source`` (oversampled
        mode: x is its 2x picture): the MSE is of the reconstruction's 2x2 means against it,
        the picture the decoder shows."""
        h, w = size or x.shape[2:]
        pos = torch.tensor([self.q_to_pos(q)], device=x.device)
        lam = self.pos_to_lambda(pos)
        with torch.no_grad():
            g, ig = self.gains(pos)
            y0 = self.g_a(x) * g
        if steps <= 0:
            return y0
        y = y0.clone().requires_grad_(True)
        opt = torch.optim.Adam([y], lr=lr)
        frozen = [p for p in self.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        try:  # the rate's noise from a fixed seed: the same picture codes the same way
            with torch.enable_grad(), torch.random.fork_rng(devices=devices):
                torch.manual_seed(0)
                for i in range(int(steps)):
                    for group in opt.param_groups:
                        group["lr"] = lr * (1.0 - i / int(steps))
                    out = self._from_latent(y, ig, contextlib.nullcontext, noise=True)
                    bits = sum(-torch.log2(v.clamp_min(1e-9)).sum()
                               for v in out["likelihoods"].values())
                    x_hat = out["x_hat"][..., :h, :w]
                    if source is None:
                        mse = F.mse_loss(x_hat, x[..., :h, :w])
                    else:
                        mse = F.mse_loss(F.avg_pool2d(x_hat, 2), source)
                    loss = lam * 255.0 ** 2 * mse + bits / (h * w)
                    opt.zero_grad()
                    loss.sum().backward()
                    opt.step()
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return y.detach()

    # ---------------------------------------------------------------- coding
    @staticmethod
    def pad(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        ph, pw = (-h) % STRIDE, (-w) % STRIDE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x

    def exact(self) -> "ExactIntra":
        """The integer twin used for coding (built once; rebuilt after `load_tables`)."""
        if getattr(self, "_exact", None) is None:
            self._exact = ExactIntra(self)
        return self._exact

    @torch.no_grad()
    def compress(self, x: torch.Tensor, q: int, refine_steps: int = 0,
                 size: tuple | None = None, source: torch.Tensor | None = None) -> dict:
        """x: 1 x 3 x H x W in [0, 1], H and W multiples of STRIDE (see `pad`).

        Returns {"strings": [z, y_anchor, y_nonanchor], "z_shape": (h, w),
        "symbols_crc": CRC-32 of the quantised latents, "y16": the quantised latent}.
        Only the analysis (g_a, h_a) runs in float: what the decoder must reproduce is exact.
        ``refine_steps`` > 0 codes a searched latent (`refined_latent`, for the picture of
        ``size`` inside the padding; ``source``: see there) instead of the analysis's.
        """
        return self.compress_latent(self.refined_latent(x, q, refine_steps, size, source))

    @torch.no_grad()
    def compress_latent(self, y: torch.Tensor) -> dict:
        """The coding half of `compress`: a gained latent y (1 x M x h x w, h and w multiples
        of 4) -> the same dict."""
        ex = self.exact()
        z = self.h_a(y)
        z_shape = tuple(z.shape[2:])
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        z_str = eb.compress(z)
        z_hat = eb.decompress(z_str, z_shape)
        hyper = ex.hyper(z_hat)
        strings, y16 = [z_str[0]], torch.zeros_like(y, dtype=torch.float64)
        for anchors in (True, False):
            idx, mu16 = ex.params(hyper, None if anchors else y16)
            idx, mu16 = cb_gather(idx, anchors), cb_gather(mu16, anchors)
            mu = (mu16 * MEAN_STEP).float()
            part = cb_gather(y, anchors)
            strings.append(gc.compress(part, idx, mu)[0])
            sym = gc.quantize(part, "symbols", mu).to(torch.float64)
            cb_scatter(ex.latent16(sym, mu16), y16, anchors)
        return {"strings": strings, "z_shape": z_shape, "y16": y16,
                "symbols_crc": symbols_crc(z_hat, y16)}

    @torch.no_grad()
    def decompress(self, strings: list, z_shape: tuple) -> tuple:
        """-> (y16: the quantised latent in 1/16 units, CRC-32 of the quantised latents)."""
        ex = self.exact()
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        z_hat = eb.decompress([strings[0]], tuple(z_shape))
        hyper = ex.hyper(z_hat)
        y16 = None
        for anchors, string in ((True, strings[1]), (False, strings[2])):
            idx, mu16 = ex.params(hyper, y16)
            if y16 is None:
                y16 = torch.zeros_like(mu16)
            idx, mu16 = cb_gather(idx, anchors), cb_gather(mu16, anchors)
            sym = gc.decompress([string], idx).to(torch.float64)
            cb_scatter(ex.latent16(sym, mu16), y16, anchors)
        return y16, symbols_crc(z_hat, y16)

    # ---------------------------------------------------------------- coding tables
    def build_tables(self) -> None:
        """Compute the coding tables from the float weights (at export time, on one machine):
        CompressAI's CDF tables and the per-q inverse gains. Decoders load them from the
        weights file instead of recomputing them with float math that can differ by a bit."""
        self.update(force=True)
        self.inv_gain_table = inv_gain_table(self)
        self._exact = None

    def coding_tables(self) -> dict:
        return {**entropy_tables(self.entropy_bottleneck, self.gaussian_conditional),
                "inv_gain": self.inv_gain_table}

    def load_tables(self, tables: dict) -> None:
        load_entropy_tables(self.entropy_bottleneck, self.gaussian_conditional, tables)
        self.inv_gain_table = tables["inv_gain"].to(self.log_gain.device).int()
        if self.inv_gain_table.shape != (Q_MAX + 1, self.M):
            raise ValueError(f"inverse gain table has shape {tuple(self.inv_gain_table.shape)},"
                             f" expected {(Q_MAX + 1, self.M)}")
        self._exact = None

    def update(self, scale_table=None, force=False, update_quantiles=False):
        if scale_table is None:
            scale_table = get_scale_table()
        return super().update(scale_table=scale_table, force=force,
                              update_quantiles=update_quantiles)

    def architecture(self) -> dict:
        return {"class": "IntraModel", "N": self.N, "M": self.M, "lambdas": list(self.lambdas),
                "stride": STRIDE, "params": sum(p.numel() for p in self.parameters())}


class ExactIntra:
    """The integer twin of an `IntraModel`: everything the decoder computes, exactly.

    hyper synthesis h_s, the context conv, the entropy-parameter net, the mean snapping, the
    scale -> CDF index lookup and the synthesis g_s run on integers (`exact.py`), so encoder
    and decoder agree bit for bit on every machine, thread count and picture size. Only the
    encoder's analysis (g_a, h_a) stays in float: its output is what gets coded.
    """

    def __init__(self, model: "IntraModel"):
        dev = model.log_gain.device
        self.h_s = ExactSequential(model.h_s, ACT_FRAC, ACT_LIMIT, what="h_s").to(dev)
        self.ctx = ExactConv(model.ctx, Y_FRAC, ACT_FRAC, Y_LIMIT, what="ctx").to(dev)
        self.ep = ExactSequential(model.ep, ACT_FRAC, ACT_LIMIT, what="ep").to(dev)
        self.g_s = ExactSequential(model.g_s, ACT_FRAC, ACT_LIMIT, what="g_s").to(dev)
        self.scale_index = ScaleIndex(model.gaussian_conditional.scale_table).to(dev)
        self.inv_gain = model.inv_gain_table.to(dev, torch.float64)

    def hyper(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self.h_s(to_fixed(z_hat, ACT_FRAC))

    def params(self, hyper: torch.Tensor, y16: torch.Tensor | None):
        """-> (CDF indexes int32, means in 1/16 units) for every latent position."""
        ctx = torch.zeros_like(hyper) if y16 is None else self.ctx(y16)
        scales, means = self.ep(torch.cat([hyper, ctx], dim=1)).chunk(2, 1)
        return self.scale_index(scales), snap_means(means)

    @staticmethod
    def latent16(symbols: torch.Tensor, mu16: torch.Tensor) -> torch.Tensor:
        return (symbols * 2.0 ** Y_FRAC + mu16).clamp_(-Y_LIMIT, Y_LIMIT)

    def synthesize(self, y_int: torch.Tensor, q: int, frac: int = Y_FRAC) -> torch.Tensor:
        """Quantised latent (integers in units of 2^-frac: 1/16 for intra) -> 1 x 3 x H x W
        uint8 picture (padded size)."""
        ig = self.inv_gain[int(q)].view(1, -1, 1, 1)
        a = round_half_up(y_int * ig * 2.0 ** (ACT_FRAC - frac - IG_FRAC))

        def picture(band: torch.Tensor) -> torch.Tensor:
            x = self.g_s(band)
            return round_half_up(x * (255.0 * 2.0 ** -ACT_FRAC)).clamp_(0, 255).to(torch.uint8)

        return in_bands(picture, a.clamp_(-ACT_LIMIT, ACT_LIMIT), Y_STRIDE, self.g_s.row_halo())


def entropy_tables(eb: EntropyBottleneck, gc: GaussianConditional) -> dict:
    """The integer tables CompressAI's rANS coder reads (built by `update()`), by name."""
    return {"eb_cdf": eb._quantized_cdf, "eb_offset": eb._offset,
            "eb_cdf_length": eb._cdf_length, "gc_cdf": gc._quantized_cdf,
            "gc_offset": gc._offset, "gc_cdf_length": gc._cdf_length,
            "scale_table": gc.scale_table}


def load_entropy_tables(eb: EntropyBottleneck, gc: GaussianConditional, tables: dict) -> None:
    """Install tables saved by `entropy_tables` (KeyError when one is missing)."""
    dev = eb.quantiles.device
    get = {k: tables[k].to(dev) for k in entropy_tables(eb, gc)}
    eb._quantized_cdf, eb._offset, eb._cdf_length = (
        get["eb_cdf"].int(), get["eb_offset"].int(), get["eb_cdf_length"].int())
    gc._quantized_cdf, gc._offset, gc._cdf_length = (
        get["gc_cdf"].int(), get["gc_offset"].int(), get["gc_cdf_length"].int())
    gc.scale_table = get["scale_table"].float()


def snap_means(means: torch.Tensor) -> torch.Tensor:
    """Integer means (units 2^-ACT_FRAC) -> the 1/16 grid, in 1/16 units (exact)."""
    return round_half_up(means * 2.0 ** (Y_FRAC - ACT_FRAC)).contiguous()


def symbols_crc(z_hat: torch.Tensor, *latents: torch.Tensor) -> int:
    """CRC-32 of the quantised latents (z in units of 2^-12, then the given integer latents),
    each as int32 little endian in C order."""
    import zlib

    import numpy as np

    crc = 0
    for t in (to_fixed(z_hat, ACT_FRAC), *latents):
        a = np.ascontiguousarray(t.cpu().numpy().astype("<i4"))
        crc = zlib.crc32(a.data, crc)
    return crc & 0xFFFFFFFF


def inv_gain_table(model: "IntraModel", forward: bool = False) -> torch.Tensor:
    """Q_MAX+1 x M inverse gains (``forward``: the gains) per q, in units of 2^-IG_FRAC
    (int32). Computed once, on the machine that exports the weights, and shipped."""
    with torch.no_grad():
        rows = []
        lg = (model.log_gain if forward else model.log_inv_gain).detach().cpu()
        lg = lg.to(torch.float64)
        for q in range(Q_MAX + 1):
            pos = torch.tensor([model.q_to_pos(q)], dtype=torch.float64)
            a = pos.floor().clamp(0, model.K - 2).long()
            t = (pos - a).view(-1, 1)
            rows.append(torch.exp(lg[a] * (1 - t) + lg[a + 1] * t)[0])
        return round_half_up(torch.stack(rows) * 2.0 ** IG_FRAC).to(torch.int32)


def build_model(arch: dict | None = None) -> IntraModel:
    arch = arch or {}
    return IntraModel(N=arch.get("N", 64), M=arch.get("M", 128),
                      lambdas=arch.get("lambdas", DEFAULT_LAMBDAS))


def macs_per_pixel(model: IntraModel, h: int = 256, w: int = 256) -> dict:
    """Multiply-accumulates per input pixel of the conv layers (encoder / decoder side)."""
    counts = {}

    def hook(name):
        def f(mod, inp, out):
            if isinstance(mod, nn.ConvTranspose2d):
                n = inp[0].numel() * mod.out_channels * math.prod(mod.kernel_size)
            else:
                n = out.numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
            counts[name] = counts.get(name, 0) + n
        return f

    hs = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
          if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        model.train()
        model(torch.rand(1, 3, h, w), torch.tensor([1.0]))
    for hd in hs:
        hd.remove()
    px = h * w
    tot = {k.split(".")[0]: 0 for k in counts}
    for k, v in counts.items():
        tot[k.split(".")[0]] += v / px
    return tot

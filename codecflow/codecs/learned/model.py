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

from codecflow.codecs.learned.layers import (
    MEAN_STEP, anchor_mask, cb_gather, cb_scatter, conv, deconv, grid_means, ste_round)

STRIDE = 64  # total down-sampling incl. the hyperprior: pad pictures to a multiple of this
DEFAULT_LAMBDAS = (0.0018, 0.0048, 0.0130, 0.0348, 0.0932)
Q_MAX = 63


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

    def _params_exact(self, hyper: torch.Tensor, y_hat_a: torch.Tensor | None):
        """Entropy parameters for coding: computed in float64, returned as float32.

        The fp32 result of a conv may differ in the last bits with the thread count or the
        kernel chosen; in float64 such differences are ~1e-16 relative and almost never survive
        the cast to fp32, the 1/16 mean grid and the scale-table lookup, so encoder and decoder
        get identical CDF indexes and means.
        """
        ctx = (torch.zeros_like(hyper) if y_hat_a is None
               else _f64_call(self.ctx, y_hat_a.double()))
        p = _f64_call(self.ep, torch.cat([hyper, ctx], dim=1))
        scales, means = p.chunk(2, 1)
        means = torch.round(means / MEAN_STEP) * MEAN_STEP
        return scales.float().contiguous(), means.float().contiguous()

    def _hyper_exact(self, z_hat: torch.Tensor) -> torch.Tensor:
        return _f64_call(self.h_s, z_hat.double())

    def synthesis(self, y_hat: torch.Tensor) -> torch.Tensor:
        """g_s for decoding: the GDN normalisations (1x1 convs, whose fp32 result varies with
        the thread count) run in float64, so the reconstruction does not depend on it."""
        x = y_hat
        for mod in self.g_s:
            x = _gdn_exact(mod, x) if isinstance(mod, GDN) else mod(x)
        return x

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
        y = y.float() * g
        with low():
            z = self.h_a(y)
        z = z.float()
        _, z_lik = self.entropy_bottleneck(z)
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
        _, y_lik = self.gaussian_conditional(y, scales, means)
        y_hat = ste_round(y - means) + means
        with low():
            x_hat = self.g_s(y_hat * ig)
        return {"x_hat": x_hat.float(), "likelihoods": {"y": y_lik, "z": z_lik}}

    # ---------------------------------------------------------------- coding
    @staticmethod
    def pad(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        ph, pw = (-h) % STRIDE, (-w) % STRIDE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x

    @torch.no_grad()
    def compress(self, x: torch.Tensor, q: int) -> dict:
        """x: 1 x 3 x H x W in [0, 1], H and W multiples of STRIDE (see `pad`).

        Returns {"strings": [z, y_anchor, y_nonanchor], "z_shape": (h, w)}.
        """
        pos = torch.tensor([self.q_to_pos(q)], device=x.device)
        g, _ = self.gains(pos)
        y = self.g_a(x) * g
        z = self.h_a(y)
        z_shape = tuple(z.shape[2:])
        z_str = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_str, z_shape)
        # identical to the decoder from here on
        hyper = self._hyper_exact(z_hat)
        s_a, m_a = self._params_exact(hyper, None)
        ya, sa, ma = cb_gather(y, True), cb_gather(s_a, True), cb_gather(m_a, True)
        gc = self.gaussian_conditional
        a_str = gc.compress(ya, gc.build_indexes(sa), ma)
        ya_hat = gc.quantize(ya, "dequantize", ma)
        y_hat_a = cb_scatter(ya_hat, torch.zeros_like(y), True)
        s_n, m_n = self._params_exact(hyper, y_hat_a)
        yn, sn, mn = cb_gather(y, False), cb_gather(s_n, False), cb_gather(m_n, False)
        n_str = gc.compress(yn, gc.build_indexes(sn), mn)
        return {"strings": [z_str[0], a_str[0], n_str[0]], "z_shape": z_shape}

    @torch.no_grad()
    def decompress(self, strings: list, z_shape: tuple, q: int) -> torch.Tensor:
        """-> 1 x 3 x H x W reconstruction (unclamped, padded size)."""
        dev = self.log_gain.device
        pos = torch.tensor([self.q_to_pos(q)], device=dev)
        _, ig = self.gains(pos)
        z_hat = self.entropy_bottleneck.decompress([strings[0]], tuple(z_shape))
        hyper = self._hyper_exact(z_hat)
        s_a, m_a = self._params_exact(hyper, None)
        gc = self.gaussian_conditional
        sa, ma = cb_gather(s_a, True), cb_gather(m_a, True)
        ya_hat = gc.decompress([strings[1]], gc.build_indexes(sa), means=ma)
        y_hat = cb_scatter(ya_hat, torch.zeros_like(s_a), True)
        s_n, m_n = self._params_exact(hyper, y_hat)
        sn, mn = cb_gather(s_n, False), cb_gather(m_n, False)
        yn_hat = gc.decompress([strings[2]], gc.build_indexes(sn), means=mn)
        y_hat = cb_scatter(yn_hat, y_hat, False)
        return self.synthesis(y_hat * ig)

    def update(self, scale_table=None, force=False, update_quantiles=False):
        if scale_table is None:
            scale_table = get_scale_table()
        return super().update(scale_table=scale_table, force=force,
                              update_quantiles=update_quantiles)

    def architecture(self) -> dict:
        return {"class": "IntraModel", "N": self.N, "M": self.M, "lambdas": list(self.lambdas),
                "stride": STRIDE, "params": sum(p.numel() for p in self.parameters())}


def _f64_call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``module`` in float64 (parameters cast on the fly; the module is not modified)."""
    from torch.func import functional_call

    state = {k: v.double() if v.is_floating_point() else v
             for k, v in list(module.named_parameters()) + list(module.named_buffers())}
    return functional_call(module, state, (x,))


def _gdn_exact(gdn: GDN, x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    beta = gdn.beta_reparam(gdn.beta).double()
    gamma = gdn.gamma_reparam(gdn.gamma).double().reshape(c, c, 1, 1)
    xd = x.double()
    norm = F.conv2d(xd * xd, gamma, beta)
    norm = torch.sqrt(norm) if gdn.inverse else torch.rsqrt(norm)
    return (xd * norm).float()


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

"""Coding one picture given a condition on its latent grid: the part learned-stereo's second
view and learned-video's P-frames share.

The picture goes through learned-intra's analysis at q (gain included), its latent through the
conditional latent coder given the condition, and the decoded latent through learned-intra's
exact synthesis. Where the condition comes from (a disparity-aligned view, a motion-moved
previous frame) and how it is signalled is the caller's business.
"""

from __future__ import annotations

import numpy as np

from codecflow.codecs.learned.intra import _to_rgb, is_grey
from codecflow.codecs.learned.payload import check_symbols
from codecflow.errors import CodecError

C_FRAC = 12  # conditions: learned-intra's analysis of an aligned picture, units of 2^-12


class ExactAnalysis:
    """learned-intra's analysis transform g_a on integers (`exact.py`): uint8 pixels in,
    the latent in units of 2^-ACT_FRAC out, the same on every machine. The first layer's
    weights absorb the 1/255 of the float model's input scaling."""

    def __init__(self, intra):
        import copy

        import torch

        from codecflow.codecs.learned.exact import ACT_FRAC, ExactSequential

        g_a = copy.deepcopy(intra.g_a).to(torch.device("cpu")).double()
        with torch.no_grad():
            g_a[0].weight.div_(255.0)
        dev = next(intra.parameters()).device
        self.net = ExactSequential(g_a, 0, 255.0, ACT_FRAC, what="g_a").to(dev)

    def __call__(self, x):
        return self.net(x)


def exact_analysis(intra) -> ExactAnalysis:
    ex = getattr(intra, "_exact_analysis", None)
    if ex is None:
        ex = intra._exact_analysis = ExactAnalysis(intra)
    return ex


def _padded(intra, rgb: np.ndarray):
    import torch

    dev = next(intra.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(dev).permute(2, 0, 1)[None]
    return intra.pad(x.to(torch.float64))


def condition_latent(intra, coder, aligned_rgb: np.ndarray, q: int):
    """Both sides: the condition for a picture aligned to the one being coded -> its gained
    latent as integers in units of 2^-C_FRAC (exact analysis, the gains shipped with the
    coder)."""
    import torch

    from codecflow.codecs.learned.exact import round_half_up

    with torch.no_grad():
        ga = exact_analysis(intra)(_padded(intra, aligned_rgb))
        gain = coder.cond_gain[int(q)].to(ga.device, torch.float64).view(1, -1, 1, 1)
        return round_half_up(ga * gain * 2.0 ** -16)


def analyse(intra, rgb: np.ndarray, q: int):
    """uint8 H x W x 3 RGB -> its gained latent at q (1 x M x h x w float)."""
    import torch

    dev = next(intra.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(dev).permute(2, 0, 1)[None]
    x = intra.pad(x.float() / 255.0)
    with torch.no_grad():
        g, _ = intra.gains(torch.tensor([intra.q_to_pos(q)], device=dev))
        return intra.g_a(x) * g


def code_latent(intra, coder, y, c_int, c_frac: int, q: int, h: int, w: int,
                grey: bool) -> tuple:
    """Encoder: -> (strings, symbols CRC, uint8 RGB picture every decoder reproduces, decoded
    latent in units of 2^-12)."""
    import torch

    from codecflow.codecs.learned.exact import ACT_FRAC

    with torch.no_grad():
        out = coder.compress(y, c_int, c_frac)
        picture = intra.exact().synthesize(out["y_hat"], int(q), ACT_FRAC)
    return out["strings"], out["symbols_crc"], _to_rgb(picture, h, w, grey), out["y_hat"]


def decode_latent(intra, coder, strings: list, sym_crc: int, c_int, c_frac: int, q: int,
                  h: int, w: int, grey: bool, what: str, where: str = "") -> tuple:
    """Decoder: -> (uint8 RGB picture, decoded latent in units of 2^-12)."""
    import torch

    from codecflow.codecs.learned.exact import ACT_FRAC

    hl, wl = c_int.shape[2:]
    try:
        with torch.no_grad():
            y_hat, got = coder.decompress(strings, (hl // 4, wl // 4), c_int, c_frac)
    except CodecError:
        raise
    except Exception as e:  # noqa: BLE001 - rANS / shape errors from a bad stream
        raise CodecError(f"{where}{what} payload cannot be decoded: {e}") from e
    check_symbols(got, sym_crc, where)
    with torch.no_grad():
        picture = intra.exact().synthesize(y_hat, int(q), ACT_FRAC)
    return _to_rgb(picture, h, w, grey), y_hat


def load_conditional_coder(path, intra_sha: str, codec: str = "learned-stereo",
                           device: str = "cpu"):
    """The conditional coder of ``codec`` (learned-stereo, learned-video), checked against the
    intra weights it was trained on top of."""
    from codecflow.codecs.learned import weights as W

    return W.load_on_intra(path, intra_sha, codec, device)


__all__ = ["analyse", "code_latent", "decode_latent", "condition_latent",
           "load_conditional_coder", "is_grey"]

"""compressai:<name>: CompressAI zoo models as intra codecs (pretrained weights need internet).

q 0..63 maps evenly onto the model's quality levels (1..8, or 1..6 for cheng2020). The
pretrained weights are downloaded by torch.hub on first use and cached; without internet the
codec fails fast with a clear CodecError (our own `learned-intra` needs no download).

Payload (docs/bitstream.md, "learned-intra payload", zoo variant):

    0  1  magic 0x5A ('Z')        1  1  version (1)          2  1  q
    3  1  zoo quality level       4  2  height (u16)         6  2  width (u16)
    8  2  latent shape h (u16)   10  2  latent shape w (u16) 12  1  number of strings n
    13 4n lengths (u32 each)      then CRC-32 (u32) of everything before it and the strings,
    then the strings (model.compress order).
"""

from __future__ import annotations

import socket
import struct

import numpy as np

from codecflow.codecs import colour
from codecflow.data import Frame, StreamInfo
from codecflow.codecs.base import PictureCodec
from codecflow.codecs.learned import payload as layout
from codecflow.codecs.learned.intra import resolve_device
from codecflow.codecs.registry import CodecSpec, register
from codecflow.errors import CodecError

MAGIC = 0x5A
VERSION = 1
_HEAD = struct.Struct("<BBBBHHHHB")
STRIDE = 64
DOWNLOAD_TIMEOUT_S = 10.0


def zoo_levels() -> dict:
    """Zoo model name -> number of quality levels (the models with fixed-rate weights)."""
    from compressai.zoo.image import cfgs

    return {name: len(levels) for name, levels in cfgs.items()}


def quality_for_q(q: int, levels: int) -> int:
    return 1 + int(round(int(q) * (levels - 1) / 63.0))


def _load_zoo_model(name: str, quality: int):
    """Pretrained zoo model, failing fast (bounded socket timeout) when offline."""
    from compressai.zoo import image_models

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return image_models[name](quality=quality, metric="mse", pretrained=True)
    except Exception as e:  # noqa: BLE001 - urllib / socket / hub errors
        raise CodecError(
            f"compressai:{name}: downloading the pretrained weights (quality {quality}) failed "
            f"({type(e).__name__}: {e}). CompressAI zoo models need internet on first use "
            f"(weights are then cached by torch.hub); use the offline codec 'learned-intra' "
            f"instead") from e
    finally:
        socket.setdefaulttimeout(old)


def pack(q, quality, h, w, shape, strings) -> bytes:
    return layout.pack(_HEAD.pack(MAGIC, VERSION, q, quality, h, w, int(shape[0]),
                                  int(shape[1]), len(strings)), strings)


def unpack(payload: bytes):
    payload = bytes(payload)
    if len(payload) < _HEAD.size:
        raise CodecError(f"compressai payload truncated: {len(payload)} bytes, header needs "
                         f"{_HEAD.size}")
    m, ver, q, quality, h, w, sh, sw, n = _HEAD.unpack_from(payload, 0)
    if m != MAGIC:
        raise CodecError(f"compressai payload: bad format byte 0x{m:02x} (expected "
                         f"0x{MAGIC:02x}); not a zoo-codec picture")
    if ver != VERSION:
        raise CodecError(f"compressai payload version {ver} not supported (reads {VERSION})")
    strings, _ = layout.unpack(payload, _HEAD.size, n, False, "compressai")
    return q, quality, h, w, (sh, sw), strings


# CompressAI's image zoo (compressai.zoo.image.cfgs), listed here so that config validation
# can check a name without importing torch; tests/codecs/learned check the list is current.
ZOO_MODELS = ("bmshj2018-factorized", "bmshj2018-factorized-relu", "bmshj2018-hyperprior",
              "cheng2020-anchor", "cheng2020-attn", "mbt2018", "mbt2018-mean")


@register(CodecSpec("compressai:", unit_kinds=("frame", "pair", "gop"), needs_torch=True,
                    uses_device=True, threads="torch", variants=ZOO_MODELS))
class ZooCodec(PictureCodec):
    """A CompressAI zoo model (pretrained, MSE-optimised) as a per-picture codec."""

    version = "1"

    def __init__(self, model_name: str, q: int = 32, device: str = "cpu", **params):
        super().__init__(q=q, device=device, **params)
        if params:
            raise CodecError(f"compressai:{model_name}: unknown parameter(s) {sorted(params)}")
        levels = zoo_levels()
        if model_name not in levels:
            raise CodecError(f"unknown CompressAI zoo model {model_name!r}; available: "
                             f"{', '.join(sorted(levels))} (use as compressai:<name>)")
        self.model_name = model_name
        self.name = f"compressai:{model_name}"
        self.levels = levels[model_name]
        self.quality = quality_for_q(self.q, self.levels)
        self.device = resolve_device(device)
        self._models = {}
        self._model(self.quality)  # download / load now: fail at construction, not mid-stream

    def _model(self, quality: int):
        if quality not in self._models:
            import torch

            m = _load_zoo_model(self.model_name, quality).eval()
            m.update(force=True)
            self._models[quality] = m.to(torch.device(self.device))
        return self._models[quality]

    @property
    def weights_id(self) -> str:
        return f"zoo:{self.model_name}:{self.quality}"

    def encode_picture(self, frame: Frame, info: StreamInfo) -> bytes:
        import torch
        import torch.nn.functional as F

        rgb = colour.to_rgb(frame, info.matrix, info.range)
        h, w = rgb.shape[:2]
        if h > 65535 or w > 65535:
            raise CodecError(f"compressai: picture {w}x{h} too large")
        model = self._model(self.quality)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device)
        x = x.permute(2, 0, 1)[None].float() / 255.0
        x = F.pad(x, (0, (-w) % STRIDE, 0, (-h) % STRIDE), mode="replicate")
        with torch.no_grad():
            out = model.compress(x)
        strings = [s[0] for s in out["strings"]]
        return pack(self.q, self.quality, h, w, tuple(out["shape"]), strings)

    def decode_picture(self, payload: bytes, info: StreamInfo) -> Frame:
        import torch

        q, quality, h, w, shape, strings = unpack(payload)
        if not 1 <= quality <= self.levels:
            raise CodecError(f"compressai payload: quality {quality} outside 1..{self.levels}")
        model = self._model(quality)
        try:
            with torch.no_grad():
                x_hat = model.decompress([[s] for s in strings], shape)["x_hat"]
        except Exception as e:  # noqa: BLE001
            raise CodecError(f"compressai payload cannot be decoded: {e}") from e
        x_hat = x_hat[0, :, :h, :w].clamp(0, 1).mul(255).round().to(torch.uint8)
        rgb = np.ascontiguousarray(x_hat.permute(1, 2, 0).cpu().numpy())
        return colour.like(rgb, info.pix_fmt, info.matrix, info.range)

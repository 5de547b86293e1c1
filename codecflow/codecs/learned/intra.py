"""learned-intra: our compact variable-rate learned image codec, one picture per record.

Payload (see docs/bitstream.md, "learned-intra payload"):

    offset size  field
    0      1     magic 0x4C ('L')
    1      1     payload version (2)
    2      1     q (0..63)
    3      1     flags: 0x01 grey picture (R = G = B; decoded to grey);
                       0x02 oversampled (the latents code the picture at 2H x 2W);
                       0x04 (with 0x02) coded by the oversampled mode's own model
                            (learned_intra_2x.pt), not by the main one
    4      2     original height (u16, little endian)
    6      2     original width  (u16)
    8      4     length of the z string (u32)
    12     4     length of the y-anchor string (u32)
    16     4     length of the y-non-anchor string (u32)
    20     4     CRC-32 of the quantised latents the encoder coded (u32)
    24     4     CRC-32 of bytes 0..23 and the three strings
    28     ...   z string, y-anchor string, y-non-anchor string (CompressAI rANS)

Decoding is exact (integer arithmetic, `exact.py`): the decoded latents and the picture are the
same on every machine. Version 1 payloads (float entropy parameters) are refused.

The q of the payload is the model's rate point; the codec's q (0..63, what a user sets) maps to
a rate point and, at the top of the range, the oversampled mode (`coding_choices`).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

from codecflow.codecs import colour
from codecflow.data import Frame, StreamInfo, is_int
from codecflow.codecs.base import PictureCodec
from codecflow.codecs.learned import payload as layout
from codecflow.codecs.registry import CodecSpec, register
from codecflow.errors import CodecError

MAGIC = 0x4C
PAYLOAD_VERSION = 2
_HEAD = struct.Struct("<BBBBHH")  # format byte, version, q, flags, height, width
FLAG_GREY = 0x01
FLAG_OVERSAMPLED = 0x02
FLAG_OWN_MODEL = 0x04
FLAGS = FLAG_GREY | FLAG_OVERSAMPLED | FLAG_OWN_MODEL


class QMap(NamedTuple):
    """How the codec's q maps to coding choices (`coding_choices`)."""
    adaptive_from: int    # codec q from which the encoder also tries coding the picture at 2x
    oversample_from: int  # ... and from which it always does
    offset: int           # q - offset: the rate point of the 2x picture in the adaptive range
    low: int              # the 2x rate point at oversample_from (then evenly up to 63)


# the oversampled mode coded by the main model (no learned_intra_2x.pt installed)
SAME_MODEL_QMAP = QMap(48, 58, 34, 27)
# ... by its own model (learned_intra_2x.pt): better at 2x than the main model, so it takes
# over from a lower q; always 2x from q 56, at rate points 26, 31, 37, 42, 47, 52, 58, 63
OWN_MODEL_QMAP = QMap(44, 56, 32, 26)
N_STRINGS = 3  # z, y anchors, y non-anchors
MAX_SIDE = 65535
MAX_REFINE_STEPS = 1000


def pack_payload(q: int, h: int, w: int, strings: list, symbols_crc: int,
                 flags: int = 0) -> bytes:
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise CodecError(f"learned-intra: picture {w}x{h} is outside 1..{MAX_SIDE} per side")
    return layout.pack(_HEAD.pack(MAGIC, PAYLOAD_VERSION, q, flags, h, w), strings, symbols_crc)


def unpack_payload(data: bytes) -> tuple:
    """-> (q, h, w, [strings], symbols CRC, flags). Raises CodecError on anything malformed."""
    data = bytes(data)
    what = "learned-intra"
    if len(data) >= 2 and data[0] == MAGIC and data[1] == 1:
        raise CodecError(f"{what} payload version 1 (float entropy parameters, made before "
                         f"exact decoding) is not supported; re-encode the source")
    _, _, q, flags, h, w = layout.read_head(data, _HEAD, N_STRINGS, MAGIC, PAYLOAD_VERSION, what)
    if q > 63 or h == 0 or w == 0 or flags & ~FLAGS or (
            flags & FLAG_OWN_MODEL and not flags & FLAG_OVERSAMPLED):
        raise CodecError(f"{what} payload header invalid: q={q}, size {w}x{h}, "
                         f"flags 0x{flags:02x}")
    strings, sym_crc = layout.unpack(data, _HEAD.size, N_STRINGS, True, what)
    return q, h, w, strings, sym_crc, flags


def coding_choices(q: int, own_model: bool = False) -> list:
    """The codec's q (0..63) -> the ways the encoder tries: [(the model's rate point, oversampled?),
    ...]. With two, it keeps the one of lower `rd_cost` (the payload says which it is).
    ``own_model``: the oversampled mode has its own model (OWN_MODEL_QMAP, else
    SAME_MODEL_QMAP).

    * q < adaptive_from: the picture as it is, at rate point q (the learned stereo and video
      codecs code their pictures this way at every q).
    * adaptive_from <= q < oversample_from: as it is at rate point q, or at 2x
      (`oversample.py`) at rate point q - offset, whichever costs less for this picture.
    * q >= oversample_from: at 2x, rate points low .. 63 spread evenly.

    The boundaries were chosen by measurement on held-out pictures and Kodak's validation
    pictures (docs/training.md, "High quality: the oversampled mode")."""
    q = int(q)
    if not 0 <= q <= 63:
        raise CodecError(f"learned-intra: q must be 0..63, got {q}")
    m = OWN_MODEL_QMAP if own_model else SAME_MODEL_QMAP
    if q < m.adaptive_from:
        return [(q, False)]
    if q < m.oversample_from:
        return [(q, False), (q - m.offset, True)]
    step = (63 - m.low) / (63 - m.oversample_from)
    return [(round(m.low + (q - m.oversample_from) * step), True)]


def oversampled_model(model):
    """The model that codes the oversampled mode: its own (`weights.load_intra_model`
    attaches it), else the main model."""
    return getattr(model, "oversampled_model", None) or model


def rd_cost(model, q: int, rgb: np.ndarray, picture: np.ndarray, n_bytes: int) -> float:
    """The training loss of a coded picture at the rate point q's lambda:
    lambda(q) * 255^2 * MSE (on 0..1) + bits per pixel."""
    import torch

    from codecflow.codecs.metrics import mse

    lam = float(model.pos_to_lambda(torch.tensor([model.q_to_pos(q)])))
    return lam * mse(picture, rgb) + n_bytes * 8 / (rgb.shape[0] * rgb.shape[1])


def encode_best(model, rgb: np.ndarray, q: int, refine_steps: int = 0) -> tuple:
    """Code a picture at the codec's q (`coding_choices`) -> (payload, the decoded picture)."""
    choices = coding_choices(q, oversampled_model(model) is not model)
    coded = [encode_rgb(model, rgb, point, refine_steps, oversampled)
             for point, oversampled in choices]
    if len(coded) == 1:
        return coded[0]
    return min(coded, key=lambda c: rd_cost(model, choices[0][0], rgb, c[1], len(c[0])))


def _to_rgb(picture, h: int, w: int, grey: bool) -> np.ndarray:
    """The synthesis output (1 x 3 x Hp x Wp uint8) cropped to H x W, as H x W x 3 RGB. A grey
    picture comes back grey: every channel is the rounded mean of the three (exact integers),
    so no colour noise appears where the source had none."""
    rgb = np.ascontiguousarray(picture[0, :, :h, :w].permute(1, 2, 0).cpu().numpy())
    if grey:
        mean = (rgb.astype(np.uint16).sum(axis=2) + 1) // 3
        rgb = np.repeat(mean.astype(np.uint8)[..., None], 3, axis=2)
    return rgb


def is_grey(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and
                np.array_equal(rgb[..., 1], rgb[..., 2]))


def encode_rgb(model, rgb: np.ndarray, q: int, refine_steps: int = 0,
               oversampled: bool = False) -> tuple:
    """uint8 H x W x 3 RGB -> (payload bytes, the uint8 RGB picture every decoder produces).
    ``q``: the model's rate point; ``oversampled``: code the picture at 2x (`oversample.py`).

    The picture comes from the encoder's own quantised latents: decoding is exact, and the
    symbols CRC in the payload proves that a decoder read the same latents."""
    payload, picture, _ = encode_rgb_latent(model, rgb, q, refine_steps, oversampled)
    return payload, picture


def encode_rgb_latent(model, rgb: np.ndarray, q: int, refine_steps: int = 0,
                      oversampled: bool = False) -> tuple:
    """As `encode_rgb`, plus the quantised latent every decoder reads (1 x M x h x w, float64
    integers in 1/16 units): the reference learned-stereo codes the other view against.
    ``refine_steps``: encoder-side latent search (`IntraModel.refined_latent`)."""
    import torch

    from codecflow.codecs.learned.oversample import halve, upsample2

    h, w = rgb.shape[:2]
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise CodecError(f"learned-intra: picture {w}x{h} is outside 1..{MAX_SIDE} per side")
    coder = oversampled_model(model) if oversampled else model
    dev = next(coder.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(dev).permute(2, 0, 1)[None].float()
    x = x / 255.0
    coded = (2 * h, 2 * w) if oversampled else (h, w)
    source = x if oversampled else None
    with torch.no_grad():
        if oversampled:
            x = upsample2(x)
        out = coder.compress(coder.pad(x), int(q), int(refine_steps), coded, source)
        picture = coder.exact().synthesize(out["y16"], int(q))
    if oversampled:
        picture = halve(picture, h, w)
    grey = is_grey(rgb)
    flags = (FLAG_GREY if grey else 0) | (FLAG_OVERSAMPLED if oversampled else 0) | (
        FLAG_OWN_MODEL if coder is not model else 0)
    return (pack_payload(int(q), h, w, out["strings"], out["symbols_crc"], flags),
            _to_rgb(picture, h, w, grey), out["y16"])


def decode_rgb(model, payload: bytes, where: str = "", size: tuple | None = None) -> np.ndarray:
    """payload bytes -> uint8 H x W x 3 RGB. Raises SymbolMismatch when the decoded latents
    are not the ones the encoder coded (corrupt or incompatible stream). ``size``: the
    stream's (height, width); a payload of another size is refused before anything is
    decoded (a corrupt header must not make the decoder allocate for a huge picture)."""
    return decode_rgb_latent(model, payload, where, size)[0]


def decode_rgb_latent(model, payload: bytes, where: str = "", size: tuple | None = None) -> tuple:
    """-> (uint8 H x W x 3 RGB, the decoded latent in 1/16 units)."""
    import torch

    from codecflow.codecs.learned.model import STRIDE
    from codecflow.codecs.learned.oversample import halve

    q, h, w, strings, sym_crc, flags = unpack_payload(payload)
    if size is not None and (h, w) != tuple(size):
        raise CodecError(f"{where}learned-intra payload holds a {w}x{h} picture, the stream is "
                         f"{size[1]}x{size[0]}")
    oversampled = bool(flags & FLAG_OVERSAMPLED)
    coder = model
    if flags & FLAG_OWN_MODEL:
        coder = oversampled_model(model)
        if coder is model:
            raise CodecError(f"{where}learned-intra payload was coded by the oversampled mode's "
                             f"own model (learned_intra_2x.pt next to the main weights), which "
                             f"is not installed here")
    ch, cw = (2 * h, 2 * w) if oversampled else (h, w)
    hp, wp = -(-ch // STRIDE) * STRIDE, -(-cw // STRIDE) * STRIDE
    try:
        with torch.no_grad():
            y16, got = coder.decompress(strings, (hp // STRIDE, wp // STRIDE))
    except Exception as e:  # noqa: BLE001 - rANS / shape errors from a bad stream
        raise CodecError(f"{where}learned-intra payload cannot be decoded: {e}") from e
    layout.check_symbols(got, sym_crc, where)
    with torch.no_grad():
        picture = coder.exact().synthesize(y16, q)
    if oversampled:
        picture = halve(picture, h, w)
    return _to_rgb(picture, h, w, bool(flags & FLAG_GREY)), y16


def intra_weights_id(model, sha: str) -> str:
    """What a learned-intra stream's header names as its weights: the main model's short
    sha256, then "+" and the oversampled mode's own model's where it has one."""
    own = getattr(model, "oversampled_sha", None)
    return sha[:12] + (f"+{own[:12]}" if own else "")


def accepts_intra_weights(model, sha: str, stream_id: str) -> bool:
    """Whether a stream whose header names ``stream_id`` decodes with these weights: the same
    ones, or the same main model for a stream coded without an oversampled model of its own
    (its payloads never ask for one)."""
    return stream_id in (intra_weights_id(model, sha), sha[:12])


def check_refine_steps(value, codec: str) -> int:
    """The encoder's latent-search steps (`IntraModel.refined_latent`), checked."""
    if not is_int(value) or not 0 <= value <= MAX_REFINE_STEPS:
        raise CodecError(f"{codec}: refine_steps must be an integer 0..{MAX_REFINE_STEPS}, "
                         f"got {value!r}")
    return int(value)


def resolve_device(device: str) -> str:
    import torch

    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CodecError(f"device {device!r} requested but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise CodecError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    if device.startswith("cuda"):
        # same conv algorithms every run: the decoder must reproduce the encoder's recon
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return device


@register(CodecSpec("learned-intra", unit_kinds=("frame", "pair", "gop"), needs_torch=True,
                    uses_device=True, threads="torch"))
class LearnedIntra(PictureCodec):
    """Compact hyperprior + checkerboard learned intra codec (our weights, see docs)."""

    version = "4"
    verifies_symbols = True

    def __init__(self, q: int = 32, device: str = "cpu", weights: str | None = None,
                 refine_steps: int = 0, **params):
        super().__init__(q=q, device=device, **params)
        if params:
            raise CodecError(f"learned-intra: unknown parameter(s) {sorted(params)}; "
                             f"known: weights, device, refine_steps")
        self.refine_steps = check_refine_steps(refine_steps, "learned-intra")
        from codecflow.codecs.learned import weights as W

        self.weights_path = str(weights) if weights else str(W.default_path("learned-intra"))
        self.device = resolve_device(device)
        # Decoding is integer arithmetic (exact.py): any device, thread count or CPU decodes
        # a stream to the same latents and the same picture.
        self.model, self._sha = W.load_intra_model(self.weights_path, self.device)

    @property
    def weights_id(self) -> str:
        return intra_weights_id(self.model, self._sha)

    def accepts_weights(self, stream_id: str) -> bool:
        return accepts_intra_weights(self.model, self._sha, stream_id)

    def encode_picture(self, frame: Frame, info: StreamInfo) -> bytes:
        return self.encode_picture_recon(frame, info)[0]

    def encode_picture_recon(self, frame: Frame, info: StreamInfo) -> tuple:
        rgb = colour.to_rgb(frame, info.matrix, info.range)
        payload, picture = encode_best(self.model, rgb, self.q, self.refine_steps)
        return payload, colour.like(picture, info.pix_fmt, info.matrix, info.range)

    def decode_picture(self, payload: bytes, info: StreamInfo) -> Frame:
        rgb = decode_rgb(self.model, payload, size=(info.height, info.width))
        return colour.like(rgb, info.pix_fmt, info.matrix, info.range)

"""Block displacement fields in pixels: the alignment of learned-stereo and learned-video.

The encoder searches, per block of ``block`` x ``block`` pixels of the picture to code, the
integer displacement (dx, dy) at which the decoded reference picture matches it best (mean
absolute difference of grey levels): along rows only for a rectified stereo pair
(`block_disparity`), in two dimensions for video (`block_motion`, coarse to fine). The field is
signalled (`pack_field`, a few hundred bytes), and encoder and decoder build the same aligned
picture from the decoded reference (`warp`: whole pixels, edges replicated, exact). Its latent,
computed by learned-intra's analysis in integer arithmetic, is the condition of the conditional
latent coder (`conditioned.py`). Block sizes and search ranges only change the encoder's search;
the decoder reads the field as it is.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from codecflow.errors import CodecError

_HEAD = struct.Struct("<HHB")  # block rows, block columns, block size / 4 (| RANGE_CODED)
RANGE_CODED = 0x80  # the residuals are range-coded (field_coder.py); else zlib (first format)
MAX_SHIFT = 4096


def grey(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])


def _block_mean(err: np.ndarray, block: int) -> np.ndarray:
    """H x W -> bh x bw means over blocks (edge blocks over their own pixels)."""
    h, w = err.shape
    bh, bw = -(-h // block), -(-w // block)
    pad = np.zeros((bh * block, bw * block), np.float32)
    pad[:h, :w] = err
    cnt = np.zeros_like(pad)
    cnt[:h, :w] = 1
    s = pad.reshape(bh, block, bw, block).sum((1, 3))
    n = cnt.reshape(bh, block, bw, block).sum((1, 3))
    return s / n


def _shifted(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """img[y + dy, x + dx] with edges replicated (whole pixels)."""
    h, w = img.shape[:2]
    ys = np.clip(np.arange(h) + dy, 0, h - 1)
    xs = np.clip(np.arange(w) + dx, 0, w - 1)
    return img[ys][:, xs]


def _search(target, ref, block, cands, prior=None):
    """The candidate (dx, dy) of least block cost, per block; ties (and costs within 0.5 %
    of the best) go to the earlier candidate, so flat areas keep small, repeated vectors."""
    best_cost, best = None, None
    for dx, dy in cands:
        cost = _block_mean(np.abs(target - _shifted(ref, dx, dy)), block)
        if prior is not None:
            cost = cost + prior(dx, dy)
        if best_cost is None:
            best_cost = cost
            best = np.zeros(cost.shape + (2,), np.int32)
            best[...] = (dx, dy)
        else:
            better = cost < best_cost * 0.995 - 1e-6
            best_cost = np.where(better, cost, best_cost)
            best[better] = (dx, dy)
    return best


def field_bits(residual: np.ndarray) -> np.ndarray:
    """Estimated bits of a field prediction residual (zero: one bit; otherwise growing with
    log2 |r|). A fixed model, not the adaptive coder's actual cost: it only steers the
    search (weights tuned by measurement, see docs/training.md)."""
    a = np.abs(residual).astype(np.float64)
    return np.where(a == 0, 1.0, 2.0 + 2.0 * np.log2(a + 1.0))


def disparity_rate(q: int) -> float:
    """The encoder's weight of field bits against match error at quality q: fields cost
    relatively more at low rates (measured on training pairs: best near 2 at q 0, near 0.5 at
    q 63)."""
    return 2.0 * 2.0 ** (-int(q) / 32.0)


def block_disparity(target_rgb: np.ndarray, ref_rgb: np.ndarray, block: int = 16,
                    d_min: int = -16, d_max: int = 256, rate: float = 1.0) -> np.ndarray:
    """Rectified pair: per block, the horizontal shift d with target(x) ~ ref(x + d) ->
    bh x bw x 2 int32 (dx = d, dy = 0). Positive d for a right view coded against the left.

    Rate-constrained: blocks are decided in raster order (the order `pack_field` predicts
    them), each taking the d of least mean absolute grey difference + ``rate`` x 64 / block^2
    x the estimated bits of d's residual against the median prediction from its decided
    neighbours (`field_bits`). ``rate`` 0: the best match alone (ties to the smaller |d|)."""
    t, r = grey(target_rgb), grey(ref_rgb)
    w = t.shape[1]
    lo, hi = max(d_min, -(w - 1)), min(d_max, w - 1)
    ds = np.arange(lo, hi + 1)
    costs = np.stack([_block_mean(np.abs(t - _shifted(r, int(d), 0)), block) for d in ds])
    costs = costs + ((np.abs(ds) * 2 + (ds < 0)) * 1e-9)[:, None, None]  # ties: small |d|
    _, bh, bw = costs.shape
    weight = float(rate) * 64.0 / (block * block)
    pick = np.zeros((bh, bw), np.int64)
    bits = {}  # predicted value -> rate term over ds
    for i in range(bh):
        for j in range(bw):
            p = _predict(pick, i, j)
            if weight == 0.0:
                pick[i, j] = ds[int(np.argmin(costs[:, i, j]))]
                continue
            if p not in bits:
                bits[p] = weight * field_bits(ds - p)
            pick[i, j] = ds[int(np.argmin(costs[:, i, j] + bits[p]))]
    field = np.zeros((bh, bw, 2), np.int32)
    field[..., 0] = pick
    return field


def block_motion(target_rgb: np.ndarray, ref_rgb: np.ndarray, block: int = 16,
                 search: int = 24) -> np.ndarray:
    """Video: per block, the displacement (dx, dy) with target(y, x) ~ ref(y + dy, x + dx),
    |dx|, |dy| <= ``search``: a search on 4x down-sampled pictures, refined at full resolution
    by +-3 pixels. -> bh x bw x 2 int32."""
    import cv2

    t, r = grey(target_rgb), grey(ref_rgb)
    h, w = t.shape
    s = 4
    if min(h, w) >= 4 * s and block % s == 0:
        ts = cv2.resize(t, (w // s, h // s), interpolation=cv2.INTER_AREA)
        rs = cv2.resize(r, (w // s, h // s), interpolation=cv2.INTER_AREA)
        rng = -(-search // s)
        cands = sorted(((dx, dy) for dx in range(-rng, rng + 1) for dy in range(-rng, rng + 1)),
                       key=lambda v: (abs(v[0]) + abs(v[1]), v))
        coarse = _search(ts, rs, block // s, cands) * s
        bh, bw = -(-h // block), -(-w // block)
        coarse = coarse[:bh, :bw]
        if coarse.shape[:2] != (bh, bw):  # the down-sampled picture lost a block row / column
            full = np.zeros((bh, bw, 2), np.int32)
            full[:coarse.shape[0], :coarse.shape[1]] = coarse
            coarse = full
    else:
        coarse = np.zeros((-(-h // block), -(-w // block), 2), np.int32)
    # refinement: each block tries its coarse vector plus small offsets
    best_cost, best = None, coarse.copy()
    offsets = sorted(((a, b) for a in range(-3, 4) for b in range(-3, 4)),
                     key=lambda v: (abs(v[0]) + abs(v[1]), v))
    for a, b in offsets:
        vec = np.clip(coarse + (a, b), -search, search)
        pred = warp(r[..., None], vec, block)[..., 0]
        cost = _block_mean(np.abs(t - pred), block)
        if best_cost is None:
            best_cost, best = cost, vec
        else:
            better = cost < best_cost * 0.995 - 1e-6
            best_cost = np.where(better, cost, best_cost)
            best = np.where(better[..., None], vec, best)
    return best.astype(np.int32)


def warp(ref: np.ndarray, field: np.ndarray, block: int) -> np.ndarray:
    """ref (H x W x C) moved per block: out[y, x] = ref[y + dy, x + dx] with (dx, dy) the
    vector of the block holding (y, x), edges replicated. Exact (a gather)."""
    h, w = ref.shape[:2]
    f = np.repeat(np.repeat(np.asarray(field), block, 0), block, 1)[:h, :w]
    ys = np.clip(np.arange(h)[:, None] + f[..., 1], 0, h - 1)
    xs = np.clip(np.arange(w)[None, :] + f[..., 0], 0, w - 1)
    return ref[ys, xs]


def _predict(plane: np.ndarray, i: int, j: int) -> int:
    """LOCO-I's median predictor from the left, upper and upper-left values (0 outside)."""
    a = int(plane[i, j - 1]) if j else (int(plane[i - 1, j]) if i else 0)
    b = int(plane[i - 1, j]) if i else a
    c = int(plane[i - 1, j - 1]) if i and j else b
    if c >= max(a, b):
        return min(a, b)
    if c <= min(a, b):
        return max(a, b)
    return a + b - c


def _varints(values) -> bytes:
    out = bytearray()
    for v in values:
        u = (v << 1) ^ (v >> 63) if v < 0 else v << 1  # zigzag
        u &= (1 << 64) - 1
        while u >= 0x80:
            out.append((u & 0x7F) | 0x80)
            u >>= 7
        out.append(u)
    return bytes(out)


def residual_planes(field: np.ndarray) -> list:
    """bh x bw x 2 vectors -> [dx residuals, dy residuals] against the LOCO-I median
    prediction from the decoded neighbours (raster order)."""
    f = np.asarray(field, dtype=np.int64)
    bh, bw = f.shape[:2]
    out = []
    for k in (0, 1):
        plane = f[..., k]
        res = np.zeros((bh, bw), np.int64)
        for i in range(bh):
            for j in range(bw):
                res[i, j] = int(plane[i, j]) - _predict(plane, i, j)
        out.append(res)
    return out


def pack_field(field: np.ndarray, block: int) -> bytes:
    """bh x bw x 2 vectors -> u16 bh, u16 bw, u8 (block / 4) | RANGE_CODED, then the
    prediction residuals (LOCO-I median predictor) of dx for all blocks in raster order, then
    of dy, range-coded with adaptive contexts (`field_coder.py`)."""
    from codecflow.codecs.learned.field_coder import encode_residuals

    f = np.asarray(field, dtype=np.int64)
    bh, bw = f.shape[:2]
    if block % 4 or not 4 <= block <= 4 * 0x7F:
        raise ValueError(f"block size {block} is not a multiple of 4 in 4..508")
    return _HEAD.pack(bh, bw, block // 4 | RANGE_CODED) + encode_residuals(residual_planes(f))


def pack_field_zlib(field: np.ndarray, block: int) -> bytes:
    """The first field format (payloads that decoders still read): u16 bh, u16 bw,
    u8 block / 4, then zlib of the residuals as zigzag varints, dx then dy."""
    f = np.asarray(field, dtype=np.int64)
    bh, bw = f.shape[:2]
    res = [int(v) for plane in residual_planes(f) for v in plane.ravel()]
    return _HEAD.pack(bh, bw, block // 4) + zlib.compress(_varints(res), 9)


def unpack_field(data: bytes, h: int, w: int, what: str) -> tuple:
    """-> (bh x bw x 2 int32 field, block size), checked against an H x W picture."""
    data = bytes(data)
    if len(data) < _HEAD.size:
        raise CodecError(f"{what} payload: displacement field truncated ({len(data)} bytes)")
    bh, bw, b4 = _HEAD.unpack_from(data, 0)
    block = 4 * (b4 & ~RANGE_CODED)
    if block == 0 or (bh, bw) != (-(-h // block), -(-w // block)):
        raise CodecError(f"{what} payload: displacement field of {bw}x{bh} blocks of "
                         f"{block} px does not fit a {w}x{h} picture")
    if b4 & RANGE_CODED:
        from codecflow.codecs.learned.field_coder import decode_residuals

        residuals = decode_residuals(data[_HEAD.size:], (bh, bw), 2, what)
    else:
        residuals = _zlib_residuals(data, bh, bw, what)
    field = np.zeros((bh, bw, 2), np.int64)
    for k, res in enumerate(residuals):
        plane = field[..., k]
        for i in range(bh):
            for j in range(bw):
                plane[i, j] = _predict(plane, i, j) + int(res[i, j])
                if abs(plane[i, j]) > MAX_SHIFT:
                    raise CodecError(f"{what} payload: displacement out of range "
                                     f"(> {MAX_SHIFT} px)")
    return field.astype(np.int32), block


def _zlib_residuals(data: bytes, bh: int, bw: int, what: str) -> list:
    """The residual planes (dx, dy) of a first-format (zlib) field."""
    try:  # at most 10 bytes per value: a corrupt stream cannot inflate without bound
        inflate = zlib.decompressobj()
        raw = inflate.decompress(data[_HEAD.size:], 20 * bh * bw + 16)
    except zlib.error as e:
        raise CodecError(f"{what} payload: displacement field corrupt: {e}") from e
    n, vals, u, shift = bh * bw, [], 0, 0
    for byte in raw:  # zigzag varints
        u |= (byte & 0x7F) << shift
        shift += 7
        if byte & 0x80:
            if shift > 63:
                raise CodecError(f"{what} payload: displacement field corrupt (varint)")
            continue
        vals.append((u >> 1) ^ -(u & 1))
        u, shift = 0, 0
    if shift or len(vals) != 2 * n:
        raise CodecError(f"{what} payload: displacement field holds {len(vals)} values, "
                         f"expected {2 * n}")
    return list(np.asarray(vals, dtype=np.int64).reshape(2, bh, bw))

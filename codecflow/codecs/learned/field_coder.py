"""Context-adaptive binary range coding of displacement-field residuals.

A field's prediction residuals (LOCO-I median prediction, `warp.py`) are mostly zero, and the
non-zero ones cluster where the depth or motion changes. Each residual r is written as bits,
each coded with an adaptive probability (its context's state):

* zero flag: is r 0? Three contexts per component: how many of the left and upper residuals
  of the same component are non-zero (0, 1 or 2).
* sign (one context per component), then |r| - 1 in unary over 12 context-coded bins (one
  context each); from 12 on, the excess is an order-0 Exp-Golomb code in equiprobable
  (bypass) bits.

The range coder is LZMA's binary coder: 32-bit range, 11-bit probabilities adapted by a shift
of 5 after each bit, carries propagated through a cached byte. All integer arithmetic: the
same bytes and values on every machine.
"""

from __future__ import annotations

import numpy as np

from codecflow.errors import CodecError

PROB_BITS = 11
PROB_ONE = 1 << PROB_BITS
ADAPT_SHIFT = 5
TOP = 1 << 24
UNARY_BINS = 12
MAX_EXP_GOLOMB_PREFIX = 24


class RangeEncoder:
    def __init__(self):
        self.low, self.range, self.cache, self.cache_size = 0, 0xFFFFFFFF, 0, 1
        self.out = bytearray()

    def _shift_low(self) -> None:
        if self.low < 0xFF000000 or self.low >= 1 << 32:
            carry = self.low >> 32
            temp = self.cache
            while True:
                self.out.append((temp + carry) & 0xFF)
                temp = 0xFF
                self.cache_size -= 1
                if self.cache_size == 0:
                    break
            self.cache = (self.low >> 24) & 0xFF
        self.cache_size += 1
        self.low = (self.low << 8) & 0xFFFFFFFF

    def bit(self, probs: list, i: int, bit: int) -> None:
        """Code ``bit`` with the adaptive probability (of a 0) ``probs[i]``, then adapt it."""
        p = probs[i]
        bound = (self.range >> PROB_BITS) * p
        if bit:
            self.low += bound
            self.range -= bound
            probs[i] = p - (p >> ADAPT_SHIFT)
        else:
            self.range = bound
            probs[i] = p + ((PROB_ONE - p) >> ADAPT_SHIFT)
        while self.range < TOP:
            self.range <<= 8
            self._shift_low()

    def bypass(self, bit: int) -> None:
        self.range >>= 1
        if bit:
            self.low += self.range
        while self.range < TOP:
            self.range <<= 8
            self._shift_low()

    def finish(self) -> bytes:
        for _ in range(5):
            self._shift_low()
        return bytes(self.out)


class RangeDecoder:
    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = bytes(data), 0, what
        self.range, self.code = 0xFFFFFFFF, 0
        for _ in range(5):
            self.code = (self.code << 8) | self._byte()

    def _byte(self) -> int:
        b = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return b

    def _normalise(self) -> None:
        while self.range < TOP:
            self.range <<= 8
            self.code = ((self.code << 8) | self._byte()) & 0xFFFFFFFF

    def bit(self, probs: list, i: int) -> int:
        p = probs[i]
        bound = (self.range >> PROB_BITS) * p
        if self.code < bound:
            self.range = bound
            probs[i] = p + ((PROB_ONE - p) >> ADAPT_SHIFT)
            bit = 0
        else:
            self.code -= bound
            self.range -= bound
            probs[i] = p - (p >> ADAPT_SHIFT)
            bit = 1
        self._normalise()
        return bit

    def bypass(self) -> int:
        self.range >>= 1
        bit = 0
        if self.code >= self.range:
            self.code -= self.range
            bit = 1
        self._normalise()
        return bit

    def check_end(self) -> None:
        if self.pos > len(self.data):
            raise CodecError(f"{self.what} payload: displacement field truncated (the range "
                             f"coder read {self.pos} of {len(self.data)} bytes)")


class _Contexts:
    """Adaptive probabilities of one field component."""

    def __init__(self):
        self.zero = [PROB_ONE // 2] * 3
        self.sign = [PROB_ONE // 2]
        self.mag = [PROB_ONE // 2] * UNARY_BINS


def _zero_context(nonzero: np.ndarray, i: int, j: int) -> int:
    return int(j > 0 and nonzero[i, j - 1]) + int(i > 0 and nonzero[i - 1, j])


def encode_residuals(planes: list) -> bytes:
    """Residual planes (bh x bw int arrays, one per component) -> range-coded bytes."""
    enc = RangeEncoder()
    for plane in planes:
        ctx = _Contexts()
        plane = np.asarray(plane, dtype=np.int64)
        nonzero = plane != 0
        bh, bw = plane.shape
        for i in range(bh):
            for j in range(bw):
                r = int(plane[i, j])
                enc.bit(ctx.zero, _zero_context(nonzero, i, j), int(r != 0))
                if r == 0:
                    continue
                enc.bit(ctx.sign, 0, int(r < 0))
                m = abs(r) - 1
                for k in range(UNARY_BINS):
                    enc.bit(ctx.mag, k, int(m > k))
                    if m <= k:
                        break
                else:  # m >= UNARY_BINS: Exp-Golomb of the excess, bypass bits
                    e = m - UNARY_BINS + 1
                    n = e.bit_length() - 1
                    for _ in range(n):
                        enc.bypass(1)
                    enc.bypass(0)
                    for b in range(n - 1, -1, -1):
                        enc.bypass((e >> b) & 1)
    return enc.finish()


def decode_residuals(data: bytes, shape: tuple, components: int, what: str) -> list:
    """The inverse of `encode_residuals` -> [bh x bw int64 plane] per component."""
    dec = RangeDecoder(data, what)
    bh, bw = shape
    planes = []
    for _ in range(components):
        ctx = _Contexts()
        plane = np.zeros((bh, bw), np.int64)
        nonzero = np.zeros((bh, bw), bool)
        for i in range(bh):
            for j in range(bw):
                if not dec.bit(ctx.zero, _zero_context(nonzero, i, j)):
                    continue
                negative = dec.bit(ctx.sign, 0)
                m = 0
                while m < UNARY_BINS and dec.bit(ctx.mag, m):
                    m += 1
                if m == UNARY_BINS:
                    n = 0
                    while dec.bypass():
                        n += 1
                        if n > MAX_EXP_GOLOMB_PREFIX:
                            raise CodecError(f"{what} payload: displacement field corrupt "
                                             f"(residual code too long)")
                    e = 1
                    for _ in range(n):
                        e = (e << 1) | dec.bypass()
                    m = UNARY_BINS + e - 1
                plane[i, j] = -(m + 1) if negative else m + 1
                nonzero[i, j] = True
        planes.append(plane)
    dec.check_end()
    return planes

"""The one quality scale of codecflow (``q`` 0..63, higher = better) mapped onto classical codecs.

Every codec takes ``q`` in 0..63; higher q means higher quality and more bytes. Classical codecs
have their own knobs, mapped linearly so that the whole q range is usable and the mapping is
strictly monotone:

* JPEG and WebP (OpenCV ``IMWRITE_JPEG_QUALITY`` / ``IMWRITE_WEBP_QUALITY``)::

      quality = round(1 + q * 99 / 63)        q=0 -> 1, q=32 -> 51, q=63 -> 100

  The step (99/63 > 1) makes successive q values give distinct qualities.

* x264, x265 and x265-intra (constant rate factor, ``crf`` option, fractional values allowed by
  both encoders)::

      crf = round(51 * (63 - q) / 63, 2)      q=0 -> 51.0, q=32 -> 25.1, q=63 -> 0.0

  CRF 51 is the coarsest quantiser of both encoders; CRF 0 is lossless for x264 (8-bit) and
  near-lossless for x265. CRF is kept fractional (two decimals) so that each q step changes the
  rate factor (a rounded integer CRF would map neighbouring q values to the same CRF).

These mappings are part of the bitstream contract only as far as the .cfl header records ``q``;
the decoders never need them.
"""

from __future__ import annotations

from codecflow.codecs.base import check_q

Q_MAX = 63
CRF_MAX = 51.0


def picture_quality(q: int) -> int:
    """q 0..63 -> JPEG/WebP quality 1..100 (``round(1 + q*99/63)``)."""
    check_q(q)
    return int(round(1 + int(q) * 99 / Q_MAX))


def crf(q: int) -> float:
    """q 0..63 -> x264/x265 CRF 51..0 (``round(51*(63-q)/63, 2)``)."""
    check_q(q)
    return round(CRF_MAX * (Q_MAX - int(q)) / Q_MAX, 2)


def crf_str(q: int) -> str:
    """CRF as the option string the libx264/libx265 wrappers take."""
    return f"{crf(q):.2f}"

"""JPEG and WebP picture codecs (OpenCV ``imencode`` / ``imdecode``).

Both work in RGB: ``rgb24`` frames are coded directly, ``yuv420p`` frames are converted to RGB
with the stream's matrix and range (`colour.to_rgb`) and the decoded RGB is converted back
(`colour.like`), so the conversion loss is part of the measured distortion. The payload of a
record is the plain ``.jpg`` / ``.webp`` file, one per picture (a stereo pair: one per view).

q (0..63) -> quality 1..100, see `codecflow.codecs.classical.quality.picture_quality`.

Constructor params:

* Jpeg: ``optimize`` (bool, default False: optimised Huffman tables), ``progressive`` (bool,
  default False). Chroma is 4:2:0 (libjpeg's default).
* Webp: none.
"""

from __future__ import annotations

import cv2
import numpy as np

from codecflow.codecs import colour
from codecflow.data import Frame, StreamInfo
from codecflow.codecs.base import PictureCodec
from codecflow.codecs.classical.quality import picture_quality
from codecflow.codecs.registry import CodecSpec, register
from codecflow.errors import CodecError


def _check_params(name: str, params: dict, allowed: dict) -> dict:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise CodecError(f"codec {name}: unknown parameter(s) {unknown}; "
                         f"allowed: {sorted(allowed) or 'none'}")
    out = dict(allowed)
    out.update(params)
    return out


class _OpenCvPicture(PictureCodec):
    ext = ""
    label = ""
    _allowed: dict = {}

    def __init__(self, q: int = 32, device: str = "cpu", **params):
        super().__init__(q=q, device=device, **params)
        self.opts = _check_params(self.name, params, self._allowed)
        self.quality = picture_quality(self.q)

    def _imwrite_params(self) -> list:
        raise NotImplementedError

    def encode_picture(self, frame: Frame, info: StreamInfo) -> bytes:
        if frame.fmt != info.pix_fmt:
            raise CodecError(f"{self.name}: frame is {frame.fmt} but the stream is {info.pix_fmt}")
        rgb = colour.to_rgb(frame, info.matrix, info.range)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        ok, buf = cv2.imencode(self.ext, bgr, self._imwrite_params())
        if not ok:
            raise CodecError(f"{self.name}: OpenCV could not encode a {frame.width}x{frame.height} "
                             f"picture")
        return buf.tobytes()

    def decode_picture(self, payload: bytes, info: StreamInfo) -> Frame:
        if not payload:
            raise CodecError(f"{self.name}: empty payload, not a {self.label} picture")
        try:
            img = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_COLOR)
        except cv2.error as e:  # pragma: no cover - OpenCV usually returns None instead
            raise CodecError(f"{self.name}: payload is not a decodable {self.label} picture "
                             f"({e})") from None
        if img is None:
            raise CodecError(f"{self.name}: payload of {len(payload)} bytes is not a decodable "
                             f"{self.label} picture (OpenCV imdecode failed)")
        h, w = img.shape[:2]
        if (w, h) != (info.width, info.height):
            raise CodecError(f"{self.name}: decoded picture is {w}x{h}, the stream is "
                             f"{info.width}x{info.height}")
        rgb = np.ascontiguousarray(img[..., ::-1])
        return colour.like(rgb, info.pix_fmt, info.matrix, info.range)


@register(CodecSpec("jpeg", unit_kinds=("frame", "pair", "gop")))
class Jpeg(_OpenCvPicture):
    version = "1"
    ext = ".jpg"
    label = "JPEG"
    _allowed = {"optimize": False, "progressive": False}

    def _imwrite_params(self) -> list:
        return [cv2.IMWRITE_JPEG_QUALITY, self.quality,
                cv2.IMWRITE_JPEG_OPTIMIZE, int(bool(self.opts["optimize"])),
                cv2.IMWRITE_JPEG_PROGRESSIVE, int(bool(self.opts["progressive"]))]


@register(CodecSpec("webp", unit_kinds=("frame", "pair", "gop")))
class Webp(_OpenCvPicture):
    version = "1"
    ext = ".webp"
    label = "WebP"
    _allowed: dict = {}

    def _imwrite_params(self) -> list:
        return [cv2.IMWRITE_WEBP_QUALITY, self.quality]

"""x264, x265 (closed GOPs, low-delay P) and x265-intra (every picture intra) through PyAV.

* `X264` / `X265` (unit kind ``gop``): each GOP unit is a closed GOP coded by a fresh encoder
  (first frame IDR, the rest P; no B-frames, keyint = GOP length, no scene-cut, no open GOP) and
  flushed at the end of the GOP. The packets are then decoded by a fresh decoder: the decoded
  frames (the real decode path, not the encoder's internal reconstruction) are the unit's
  reconstruction. One record per frame: its payload is that frame's access unit in Annex-B form
  (the keyframe carries SPS/PPS, plus VPS for HEVC, in-band, so every GOP decodes on its own),
  flags FLAG_INTRA on the keyframe, recon_crc the CRC of the decoded frame.
* `X265Intra` (``x265-intra``, the BPG-class anchor; frame / pair / gop units): every picture is
  coded alone (keyint=1). RGB streams are coded as YCbCr 4:4:4 (``yuv444p``, like BPG's 4:4:4
  mode, converted with the stream's matrix and range); yuv420p streams are coded as they are.

SEI NAL units (x264 writes a ~600-byte version/options banner into every IDR) are removed from
the payloads: they carry no picture data, and keeping them would charge the anchors for bytes no
real deployment would send. The decoder gets exactly the payload bytes, so the reconstruction and
its CRC are those of the stripped stream.

Odd sizes: 4:2:0 coding needs even dimensions, so the luma plane is replicate-padded to even
(the chroma planes, ceil(W/2) x ceil(H/2), already fit) and the decoded picture is cropped back
to StreamInfo.width x height. 4:4:4 coding takes odd sizes as they are.

q (0..63) -> CRF 51..0, see `codecflow.codecs.classical.quality.crf`.

Constructor params (all optional):

* ``preset``: encoder preset. Defaults: x264 "veryfast", x265 "veryfast", x265-intra "medium"
  (intra-only coding is cheap enough for the slower, better preset).
* ``threads``: encoder threads (default 1; decoders always run single-threaded, which is fast
  enough and keeps output immediate).
* ``tune``: encoder tune; default "psnr" (adaptive quantisation and psycho-visual RD off). The
  harness measures PSNR and learned codecs are trained for MSE, so an anchor that spends bits on
  psycho-visual detail would flatter them: on Kodak, x265-intra with the encoder's default tuning
  needs ~10 % more bits for the same PSNR-RGB. "none" keeps the encoder's defaults; "ssim" etc.
  are passed through.
* ``extra``: extra "key=value:key=value" options appended to x264-params / x265-params (after
  ours, so they win; the caller keeps GOPs closed).
* ``chroma`` (x265-intra only): "444" (default) or "420": how RGB streams are coded.
"""

from __future__ import annotations

from fractions import Fraction

import av
import av.error
import numpy as np

from codecflow.codecs import colour
from codecflow.data import FLAG_INTRA, CodedUnit, Frame, Record, StreamInfo, Unit, chroma_size
from codecflow.codecs.base import Codec, PictureCodec
from codecflow.codecs.classical.quality import crf_str
from codecflow.codecs.registry import CodecSpec, register
from codecflow.errors import CodecError

_JPEG_RANGE_ALIASES = {"yuvj420p": "yuv420p", "yuvj444p": "yuv444p"}
_AV_ERRORS = (av.error.FFmpegError, ValueError, TypeError, MemoryError, OverflowError)


# ----------------------------------------------------------------------------- plane helpers
def _video_frame(planes: list, fmt: str, width: int, height: int) -> av.VideoFrame:
    vf = av.VideoFrame(width, height, fmt)
    for plane, arr in zip(vf.planes, planes):
        buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        buf[:, :plane.width] = arr
    return vf


def _frame_planes(vf: av.VideoFrame) -> list:
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy()
            for p in vf.planes]


def _pad_i420(frame: Frame) -> list:
    """I420 planes with the luma replicate-padded to even size (chroma is already ceil-sized)."""
    y, u, v = frame.planes
    h, w = y.shape
    if w % 2 or h % 2:
        y = np.pad(y, ((0, h % 2), (0, w % 2)), mode="edge")
    return [y, u, v]


def _crop_i420(planes: list, width: int, height: int) -> Frame:
    cw, ch = chroma_size(width, height)
    y, u, v = planes
    return Frame.yuv420(y[:height, :width], u[:ch, :cw], v[:ch, :cw])


def _even(n: int) -> int:
    return n + (n % 2)


# ------------------------------------------------------------------------------- Annex-B NALs
def _nal_units(data: bytes) -> list:
    """Split an Annex-B byte stream into (start_code_start, nal_start, end) triples."""
    out = []
    n = len(data)
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        sc = i - 1 if i > 0 and data[i - 1] == 0 else i
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        end = n if j < 0 else (j - 1 if data[j - 1] == 0 else j)
        out.append((sc, start, end))
        i = j
    return out


def _h264_is_sei(b: int) -> bool:
    return (b & 0x1F) == 6


def _hevc_is_sei(b: int) -> bool:
    return ((b >> 1) & 0x3F) in (39, 40)


def strip_sei(data: bytes, is_sei) -> bytes:
    """Drop SEI NAL units from an Annex-B access unit (data without start codes is kept as is)."""
    nals = _nal_units(data)
    if not nals or not any(s < e and is_sei(data[s]) for _, s, e in nals):
        return data
    head = data[:nals[0][0]]
    return head + b"".join(data[sc:e] for sc, s, e in nals if not (s < e and is_sei(data[s])))


# --------------------------------------------------------------------------- PyAV coding core
class _AvCore:
    """Encoder/decoder plumbing shared by the three codecs (mixed into a Codec subclass)."""

    enc_name = ""
    dec_name = ""
    params_key = ""  # "x264-params" / "x265-params"
    default_preset = "veryfast"
    default_tune = "psnr"
    _allowed = ("preset", "threads", "tune", "extra")

    def _init_av(self, params: dict) -> None:
        unknown = sorted(set(params) - set(self._allowed))
        if unknown:
            raise CodecError(f"codec {self.name}: unknown parameter(s) {unknown}; "
                             f"allowed: {list(self._allowed)}")
        self.preset = str(params.get("preset") or self.default_preset)
        try:
            self.threads = int(params.get("threads", 1))
        except (TypeError, ValueError):
            raise CodecError(f"codec {self.name}: threads must be an integer, got "
                             f"{params.get('threads')!r}") from None
        if not 1 <= self.threads <= 64:
            raise CodecError(f"codec {self.name}: threads must be 1..64, got {self.threads}")
        tune = params.get("tune", self.default_tune)
        self.tune = None if tune in (None, "", "none") else str(tune)
        self.extra = str(params.get("extra") or "")
        self.crf = crf_str(self.q)

    def _codec_params(self, keyint: int, info: StreamInfo) -> list:
        raise NotImplementedError

    def _encoder(self, width: int, height: int, pix_fmt: str, keyint: int, info: StreamInfo):
        try:
            ctx = av.CodecContext.create(self.enc_name, "w")
        except _AV_ERRORS as e:
            raise CodecError(f"{self.name}: encoder {self.enc_name} is not available in this "
                             f"PyAV/FFmpeg build ({e})") from None
        rate = Fraction(info.fps if info.fps and info.fps > 0 else 25.0).limit_denominator(1001)
        ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
        ctx.framerate = rate
        ctx.time_base = 1 / rate
        ctx.gop_size = keyint
        ctx.max_b_frames = 0
        ctx.thread_count = self.threads
        cp = self._codec_params(keyint, info)
        if self.extra:
            cp.append(self.extra)
        opts = {"preset": self.preset, "crf": self.crf, self.params_key: ":".join(cp)}
        if self.tune:
            opts["tune"] = str(self.tune)
        ctx.options = opts
        return ctx

    def _is_sei(self, b: int) -> bool:
        raise NotImplementedError

    def _encode_pictures(self, pictures: list, pix_fmt: str, width: int, height: int,
                         info: StreamInfo) -> list:
        """Planes of N pictures -> N access units (bytes), one closed GOP from a fresh encoder."""
        n = len(pictures)
        try:
            ctx = self._encoder(width, height, pix_fmt, n, info)
            packets = []
            for i, planes in enumerate(pictures):
                vf = _video_frame(planes, pix_fmt, width, height)
                vf.pts = i
                packets.extend(ctx.encode(vf))
            packets.extend(ctx.encode(None))
        except CodecError:
            raise
        except _AV_ERRORS as e:
            raise CodecError(f"{self.name}: encoding a {width}x{height} {pix_fmt} GOP of {n} "
                             f"frames failed ({e})") from None
        if len(packets) != n:
            raise CodecError(f"{self.name}: encoder produced {len(packets)} packets for {n} "
                             f"frames")
        pts = [p.pts for p in packets]
        if pts != sorted(pts):
            raise CodecError(f"{self.name}: encoder reordered frames (pts {pts}); B-frames must "
                             f"be off")
        if not packets[0].is_keyframe or any(p.is_keyframe for p in packets[1:]):
            raise CodecError(f"{self.name}: expected one keyframe at the start of the GOP, got "
                             f"keyframes at {[i for i, p in enumerate(packets) if p.is_keyframe]}")
        return [strip_sei(bytes(p), self._is_sei) for p in packets]

    def _decode_payloads(self, payloads: list, expect: dict) -> list:
        """Access units of one closed GOP -> (pix_fmt, planes) of each decoded picture.

        A fresh decoder decodes them; ``expect`` maps each allowed pix_fmt to its coded
        (width, height)."""
        n = len(payloads)
        if n == 0:
            raise CodecError(f"{self.name}: no records to decode")
        out = []
        try:
            ctx = av.CodecContext.create(self.dec_name, "r")
            ctx.thread_count = 1
            for i, data in enumerate(payloads):
                if not data:
                    raise CodecError(f"{self.name}: record {i} of the GOP has an empty payload")
                out.extend(ctx.decode(av.Packet(bytes(data))))
            out.extend(ctx.decode(None))
        except CodecError:
            raise
        except _AV_ERRORS as e:
            raise CodecError(f"{self.name}: payload is not a decodable {self.dec_name.upper()} "
                             f"stream ({type(e).__name__}: {e})") from None
        if len(out) != n:
            raise CodecError(f"{self.name}: decoder produced {len(out)} pictures from {n} "
                             f"records (corrupt or truncated payload)")
        pictures = []
        for i, vf in enumerate(out):
            fmt = vf.format.name
            fmt = _JPEG_RANGE_ALIASES.get(fmt, fmt)  # full-range VUI: same planes
            if expect.get(fmt) != (vf.width, vf.height):
                want = " or ".join(f"{w}x{h} {f}" for f, (w, h) in expect.items())
                raise CodecError(f"{self.name}: picture {i} decodes as {vf.width}x{vf.height} "
                                 f"{fmt}, expected {want} (payload does not belong to this "
                                 f"stream)")
            pictures.append((fmt, _frame_planes(vf)))
        return pictures


def _vui(info: StreamInfo, x264: bool) -> list:
    """Colour description for the SPS VUI (informative: lets other players show it right)."""
    matrix = {"bt709": "bt709", "bt601": "smpte170m"}.get(info.matrix)
    out = [f"colormatrix={matrix}"] if matrix else []
    if x264:
        out.append("range=" + ("pc" if info.range == "full" else "tv"))
    else:
        out.append("range=" + ("full" if info.range == "full" else "limited"))
    return out


class _X264Params:
    enc_name = "libx264"
    dec_name = "h264"
    params_key = "x264-params"

    def _codec_params(self, keyint: int, info: StreamInfo) -> list:
        return [f"keyint={keyint}", f"min-keyint={keyint}", "scenecut=0", "bframes=0",
                "open-gop=0", f"threads={self.threads}", *_vui(info, True)]

    def _is_sei(self, b: int) -> bool:
        return _h264_is_sei(b)


class _X265Params:
    enc_name = "libx265"
    dec_name = "hevc"
    params_key = "x265-params"

    def _codec_params(self, keyint: int, info: StreamInfo) -> list:
        return ["log-level=error", f"keyint={keyint}", f"min-keyint={keyint}", "scenecut=0",
                "bframes=0", "open-gop=0", "info=0", f"pools={self.threads}", "frame-threads=1",
                *_vui(info, False)]

    def _is_sei(self, b: int) -> bool:
        return _hevc_is_sei(b)


# ------------------------------------------------------------------------------ GOP codecs
class _GopCodec(_AvCore, Codec):

    def __init__(self, q: int = 32, device: str = "cpu", **params):
        super().__init__(q=q, device=device, **params)
        self._init_av(params)

    def _coded_size(self, info: StreamInfo) -> tuple:
        return _even(info.width), _even(info.height)

    def encode(self, unit: Unit) -> CodedUnit:
        info = unit.info
        if unit.kind != "gop":
            raise CodecError(f"codec {self.name} codes gop units, got a {unit.kind!r} unit "
                             f"(use unit kind gop, or x265-intra / jpeg / webp for pictures)")
        if not unit.frames:
            raise CodecError(f"{self.name}: empty GOP unit {unit.seq}")
        pictures = []
        for f in unit.frames:
            if f.fmt != info.pix_fmt or (f.width, f.height) != (info.width, info.height):
                raise CodecError(f"{self.name}: frame is {f.width}x{f.height} {f.fmt}, the stream "
                                 f"is {info.width}x{info.height} {info.pix_fmt}")
            pictures.append(_pad_i420(colour.to_i420(f, info.matrix, info.range)))
        w2, h2 = self._coded_size(info)
        payloads = self._encode_pictures(pictures, "yuv420p", w2, h2, info)
        recon = self._to_frames(self._decode_payloads(payloads, {"yuv420p": (w2, h2)}), info)
        records = [Record(unit.first_frame + i, FLAG_INTRA if i == 0 else 0, p, r.crc32())
                   for i, (p, r) in enumerate(zip(payloads, recon))]
        return CodedUnit(unit.kind, unit.seq, unit.stream, records, recon, info,
                         unit.first_frame, unit.index, dict(unit.meta))

    def _to_frames(self, decoded: list, info: StreamInfo) -> list:
        frames = [_crop_i420(p, info.width, info.height) for _, p in decoded]
        if info.pix_fmt == "rgb24":
            frames = [Frame.rgb(colour.i420_to_rgb(f, info.matrix, info.range)) for f in frames]
        return frames

    def decode(self, records: list, info: StreamInfo, max_layer: int | None = None) -> dict:
        if info.unit_kind == "pair":
            raise CodecError(f"codec {self.name} does not code stereo pairs (unit kind gop only)")
        w2, h2 = self._coded_size(info)
        frames = self._to_frames(self._decode_payloads([r.payload for r in records],
                                                       {"yuv420p": (w2, h2)}), info)
        return {(r.frame_index, 0): f for r, f in zip(records, frames)}


@register(CodecSpec("x264", unit_kinds=("gop",), views=(1,), threads="param"))
class X264(_X264Params, _GopCodec):
    """H.264 (libx264) closed GOPs, IPPP."""

    version = "1"
    default_preset = "veryfast"


@register(CodecSpec("x265", unit_kinds=("gop",), views=(1,), threads="param"))
class X265(_X265Params, _GopCodec):
    """HEVC (libx265) closed GOPs, low-delay P (IPPP)."""

    version = "1"
    default_preset = "veryfast"


# ----------------------------------------------------------------------------- intra (BPG)
@register(CodecSpec("x265-intra", unit_kinds=("frame", "pair", "gop"), threads="param"))
class X265Intra(_X265Params, _AvCore, PictureCodec):
    """HEVC intra pictures (libx265, keyint=1): the BPG-class still-image anchor."""

    version = "1"
    default_preset = "medium"
    _allowed = ("preset", "threads", "tune", "extra", "chroma")

    def __init__(self, q: int = 32, device: str = "cpu", **params):
        super().__init__(q=q, device=device, **params)
        self._init_av(params)
        self.chroma = str(params.get("chroma", "444"))
        if self.chroma not in ("444", "420"):
            raise CodecError(f"codec {self.name}: chroma must be '444' or '420', got "
                             f"{self.chroma!r}")

    def _coded(self, info: StreamInfo) -> tuple:
        """(pix_fmt, width, height) the encoder sees for this stream."""
        if info.pix_fmt == "rgb24" and self.chroma == "444":
            return "yuv444p", info.width, info.height
        return "yuv420p", _even(info.width), _even(info.height)

    def encode_picture(self, frame: Frame, info: StreamInfo) -> bytes:
        if frame.fmt != info.pix_fmt or (frame.width, frame.height) != (info.width, info.height):
            raise CodecError(f"{self.name}: frame is {frame.width}x{frame.height} {frame.fmt}, "
                             f"the stream is {info.width}x{info.height} {info.pix_fmt}")
        fmt, w, h = self._coded(info)
        if fmt == "yuv444p":
            yuv = colour.rgb_to_yuv444(frame.planes[0], info.matrix, info.range)
            yuv = np.clip(np.rint(yuv), 0, 255).astype(np.uint8)
            planes = [yuv[..., i] for i in range(3)]
        else:
            planes = _pad_i420(colour.to_i420(frame, info.matrix, info.range))
        return self._encode_pictures([planes], fmt, w, h, info)[0]

    def decode_picture(self, payload: bytes, info: StreamInfo) -> Frame:
        # The decoder follows the payload (4:4:4 or 4:2:0), not this instance's ``chroma``
        # parameter, which the .cfl header does not record.
        expect = {"yuv420p": (_even(info.width), _even(info.height))}
        if info.pix_fmt == "rgb24":
            expect["yuv444p"] = (info.width, info.height)
        fmt, planes = self._decode_payloads([payload], expect)[0]
        if fmt == "yuv444p":
            return Frame.rgb(colour.yuv444_to_rgb(np.stack(planes, axis=-1), info.matrix,
                                                  info.range))
        f = _crop_i420(planes, info.width, info.height)
        if info.pix_fmt == "rgb24":
            return Frame.rgb(colour.i420_to_rgb(f, info.matrix, info.range))
        return f

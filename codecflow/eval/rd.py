"""Rate-distortion sweeps through the same code path as the pipeline.

For each q and each input (an image, a stereo pair ``NAME_L.*`` / ``NAME_R.*``, or a raw
``.yuv`` sequence), `sweep`:

1. builds the units the pipeline would build (images: one ``frame`` unit, or a one-frame ``gop``
   for GOP-only codecs; stereo pairs: one ``pair`` unit, or, for codecs that code sequences of
   one view (x264, x265), a two-frame GOP: left as I, right as P, the classical inter-view
   anchor; sequences: ``gop`` units of ``gop`` frames for codecs that code GOPs, else ``frame``
   units),
2. encodes them with ``codec.encode(unit)`` and writes a real ``.cfl`` file (`CflWriter`),
3. reads it back (`CflReader`) and decodes every unit with a separate codec instance made from the
   file header (`decode_checked`: the reconstruction CRCs are verified),
4. measures PSNR against the source (`metrics.frame_psnr`) and the rate from the ``.cfl`` file
   size (headers and record framing included): bpp = 8 * bytes / (W * H * views * frames).
   For a stereo pair: bits of both views over the pixels of both views, PSNR averaged over the
   two views; ``view_bytes`` gives each view's record bytes when the codec writes one record
   per view.

``rd.json`` (in ``out_dir``)::

    {"codec", "params", "qs", "inputs",
     "points": [{"q", "bpp", "psnr_rgb", "psnr_yuv", "psnr_y", "enc_s", "dec_s"}],
     "per_image": {name: [{"q", "bytes", "frames", "bpp", "psnr_rgb", "psnr_yuv", "psnr_y",
                           "psnr_u", "psnr_v", "enc_s", "dec_s"}]}}

Points are plain means over the inputs (as published Kodak curves are). ``enc_s`` / ``dec_s`` are
seconds per frame (per image for image inputs), wall clock, codec work only.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from codecflow.codecs import metrics
from codecflow.data import Frame, StreamInfo, Unit
from codecflow.codecs import registry
from codecflow.codecs.registry import create_codec
from codecflow.codecs.container import (CflReader, CflWriter, header_stream_info,
                                         record_size, stream_header)
from codecflow.codecs.decoding import decode_checked
from codecflow.errors import CodecflowError, SourceError
from codecflow import media
from codecflow.stages.framing import frame_groups

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mkv", ".mp4", ".avi", ".mov", ".webm", ".y4m")  # decoded with PyAV
POINT_KEYS = ("bpp", "psnr_rgb", "psnr_yuv", "psnr_y", "enc_s", "dec_s")


@dataclass
class Source:
    """One sweep input: an image file or a raw I420 sequence."""

    name: str
    path: str
    kind: str  # "image" | "pair" | "yuv" | "video"
    width: int = 0
    height: int = 0
    fps: float = 0.0
    frames: int = 1
    path_r: str = ""  # a pair's right view


def parse_yuv_name(path: str | os.PathLike) -> tuple[int, int, float]:
    """NAME_WxH_FPS.yuv -> (W, H, fps); the sources' parser, strict about the rate."""
    parsed = media.parse_yuv_name(path)
    if not parsed or parsed[2] is None:
        raise SourceError(f"{path}: raw .yuv files must be named NAME_WxH_FPS.yuv "
                          f"(e.g. foreman_352x288_30.yuv) so their size and rate are known")
    return parsed


def find_sources(inputs, max_frames: int | None = None) -> list[Source]:
    """Paths (files or folders) -> sorted list of image / .yuv sources."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[Source] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file()
                           and (f.suffix.lower() in IMAGE_EXTS + (".yuv",) + VIDEO_EXTS))
            if not files:
                raise SourceError(f"{p}: no images ({', '.join(IMAGE_EXTS)}), .yuv or video "
                                  f"files in this folder")
        elif p.is_file():
            files = [p]
        else:
            raise SourceError(f"{p}: no such file or folder")
        rights = {}
        for f in list(files):
            if f.suffix.lower() in IMAGE_EXTS and f.stem[-2:] in ("_L", "_l"):
                r = _right_of(f)
                if r is not None:
                    rights[f] = r
        files = [f for f in files if f not in set(rights.values())]
        for f in files:
            ext = f.suffix.lower()
            if f in rights:
                out.append(Source(f.stem[:-2], str(f), "pair", path_r=str(rights[f])))
                continue
            if ext == ".yuv":
                w, h, fps = parse_yuv_name(f)
                n = f.stat().st_size // media.i420_frame_size(w, h)
                if n == 0:
                    raise SourceError(f"{f}: shorter than one {w}x{h} I420 frame")
                if max_frames:
                    n = min(n, int(max_frames))
                out.append(Source(f.stem, str(f), "yuv", w, h, fps, n))
            elif ext in VIDEO_EXTS:
                out.append(Source(f.stem, str(f), "video", frames=int(max_frames or 0)))
            elif ext in IMAGE_EXTS:
                out.append(Source(f.stem, str(f), "image"))
            else:
                raise SourceError(f"{f}: not an image ({', '.join(IMAGE_EXTS)}), a .yuv or a "
                                  f"video file ({', '.join(VIDEO_EXTS)})")
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        for s in out:  # make per-image keys unique
            if s.name in dup:
                s.name = f"{Path(s.path).parent.name}/{s.name}"
    return out


def _right_of(left: Path) -> Path | None:
    """NAME_L.ext -> the existing NAME_R.* next to it (any image extension), else None."""
    stem = left.stem[:-1] + ("R" if left.stem[-1] == "L" else "r")
    for ext in (left.suffix,) + IMAGE_EXTS:
        for e in (ext, ext.upper()):
            cand = left.with_name(stem + e)
            if cand.is_file():
                return cand
    return None


def load_image(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SourceError(f"{path}: cannot read this image")
    return np.ascontiguousarray(img[..., ::-1])


def load_yuv(src: Source) -> list[Frame]:
    fb = media.i420_frame_size(src.width, src.height)
    raw = np.fromfile(src.path, dtype=np.uint8, count=fb * src.frames)
    return [media.split_i420(raw[i * fb:(i + 1) * fb], src.width, src.height)
            for i in range(src.frames)]


def load_source(src: Source, matrix: str, rng: str, unit_kind: str, gop: int):
    """-> (frames, StreamInfo). A pair gives [left, right]: a two-view stream for pair codecs,
    a two-frame sequence of one view (``unit_kind`` "gop") for the others."""
    if src.kind == "pair":
        left, right = load_image(src.path), load_image(src.path_r)
        if left.shape != right.shape:
            raise SourceError(f"{src.path_r}: {right.shape[1]}x{right.shape[0]}, but its left "
                              f"view is {left.shape[1]}x{left.shape[0]}")
        h, w = left.shape[:2]
        views = 2 if unit_kind == "pair" else 1
        info = StreamInfo(w, h, pix_fmt="rgb24", views=views, fps=1.0, unit_kind=unit_kind,
                          gop=2 if unit_kind == "gop" else 1, matrix=matrix, range=rng)
        return [Frame.rgb(left), Frame.rgb(right)], info
    if src.kind == "image":
        rgb = load_image(src.path)
        h, w = rgb.shape[:2]
        info = StreamInfo(w, h, pix_fmt="rgb24", views=1, fps=1.0, unit_kind=unit_kind,
                          gop=1, matrix=matrix, range=rng)
        return [Frame.rgb(rgb)], info
    if src.kind == "video":
        from codecflow.stages.sources.video import decode_frames, open_video, stream_fps

        container, stream = open_video(src.path)
        src.fps = stream_fps(stream)
        container.close()
        frames = [f for _, _, f in decode_frames(src.path, limit=src.frames or None)]
        if not frames:
            raise SourceError(f"{src.path}: no frames decoded")
        src.height, src.width = frames[0].planes[0].shape
        src.frames = len(frames)
    else:
        frames = load_yuv(src)
    info = StreamInfo(src.width, src.height, pix_fmt="yuv420p", views=1, fps=src.fps,
                      unit_kind=unit_kind, gop=gop if unit_kind == "gop" else 1,
                      matrix=matrix, range=rng)
    return frames, info


def make_units(frames: list, info: StreamInfo, stream: str) -> list[Unit]:
    """The pipeline's framing (stages/framing.py) of a sequence (or one pair) into units."""
    if info.views == 2:
        return [Unit("pair", 0, stream, list(frames[:2]), info, first_frame=0, index=0)]
    instants = ([f] for f in frames)
    return [Unit(info.unit_kind, k, stream, group, info, pts=first / info.fps,
                 first_frame=first, index=k)
            for group, first, k in frame_groups(instants, info.unit_kind, info.gop)]


def unit_kind_for(codec_name: str, sequence: bool, pair: bool = False) -> str:
    spec = registry.spec(codec_name)
    kinds = spec.unit_kinds
    if pair:
        return "pair" if "pair" in kinds and 2 in spec.views else "gop"
    if 1 not in spec.views:
        raise CodecflowError(f"codec {codec_name!r} codes stereo pairs only; give it a folder "
                             f"of NAME_L / NAME_R pairs")
    if not sequence:
        return "frame" if "frame" in kinds else "gop"
    if "gop" in kinds and kinds[0] == "gop":
        return "gop"
    return "frame" if "frame" in kinds else "gop"


def code_file(codec_name: str, q: int, frames: list, info: StreamInfo, path: str,
              device: str = "cpu", params: dict | None = None) -> dict:
    """Encode frames into a .cfl at path, read it back, decode and measure. -> one result row."""
    params = dict(params or {})
    enc = create_codec(codec_name, q=q, device=device, **params)
    header = stream_header(info, enc.header(), Path(path).stem)
    units = make_units(frames, info, Path(path).stem)
    enc_s = 0.0
    view_bytes = [0] * info.views
    writer = CflWriter(path, header)
    try:
        for u in units:
            t0 = time.perf_counter()
            coded = enc.encode(u)
            enc_s += time.perf_counter() - t0
            writer.write_unit(u.index, coded.records)
            for rec in coded.records:
                view_bytes[min(rec.view, info.views - 1)] += record_size(rec)
            del coded
    except BaseException:
        writer.abort()
        raise
    writer.close(frames=len(frames) // info.views)
    nbytes = os.path.getsize(path)

    rows, dec_s, n_dec = [], 0.0, 0
    with CflReader(path) as reader:
        h = reader.header
        dinfo = header_stream_info(h)
        dec = create_codec(h["codec"], q=h["q"], device=device, **params)
        for _unit, records in reader.units():
            t0 = time.perf_counter()
            out = decode_checked(dec, records, dinfo, dinfo.unit_kind, where=f"{path}: ",
                                 strict=True)
            dec_s += time.perf_counter() - t0
            for rec, fr in zip(records, out):
                src = frames[rec.frame_index * info.views + min(rec.view, info.views - 1)]
                rows.append(metrics.frame_psnr(src, fr, info.matrix, info.range))
                n_dec += 1
        status = reader.status
    if not status.complete or n_dec != len(frames):
        raise CodecflowError(f"{path}: read back {n_dec} of {len(frames)} frames "
                             f"({status.describe()})")
    m = metrics.mean_metrics(rows)
    n = len(frames) // info.views  # time instants
    row = {"q": int(q), "bytes": int(nbytes), "frames": n,
           "bpp": 8.0 * nbytes / (info.width * info.height * info.views * n),
           "psnr_rgb": m["psnr_rgb"], "psnr_yuv": m["psnr_yuv"], "psnr_y": m["psnr_y"],
           "psnr_u": m["psnr_u"], "psnr_v": m["psnr_v"],
           "enc_s": enc_s / n, "dec_s": dec_s / n}
    if info.views == 2:
        row["view_bytes"] = view_bytes
        row["psnr_rgb_views"] = [r["psnr_rgb"] for r in rows]
    return row


def sweep(codec_name: str, qs, inputs, out_dir, device: str = "cpu", params: dict | None = None,
          *, frames: int | None = None, gop: int = 8, matrix: str = "bt709",
          image_range: str = "full", yuv_range: str = "limited", keep_streams: bool = True,
          log=None) -> dict:
    """Sweep one codec over qs and inputs; writes out_dir/rd.json and returns its content.

    inputs: a path or list of paths (image files, .yuv files, video files PyAV decodes,
    folders of them). Images are
    rgb24 streams (``matrix`` / ``image_range`` say how codecs working in YCbCr convert them);
    .yuv files are yuv420p streams (``matrix`` / ``yuv_range`` give their colour), cut to
    ``frames`` frames when given, coded in GOPs of ``gop`` frames by GOP codecs.
    """
    qs = [int(q) for q in qs]
    if not qs:
        raise CodecflowError("sweep: no q values given")
    registry.spec(codec_name)  # unknown codec -> clear error before any work
    if gop < 1:
        raise CodecflowError(f"sweep: gop must be >= 1, got {gop}")
    sources = find_sources(inputs, frames)
    out = Path(out_dir)
    streams = out / "streams"
    streams.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", codec_name)
    per_image: dict[str, list] = {}
    for src in sources:
        seq = src.kind in ("yuv", "video")
        kind = unit_kind_for(codec_name, seq, pair=src.kind == "pair")
        src_frames, info = load_source(src, matrix, yuv_range if seq else image_range, kind, gop)
        rows = []
        for q in qs:
            path = streams / f"{safe}_q{q:02d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', src.name)}.cfl"
            row = code_file(codec_name, q, src_frames, info, str(path), device, params)
            if not keep_streams:
                path.unlink(missing_ok=True)
            rows.append(row)
            if log:
                log(f"{codec_name} q={q:2d} {src.name}: {row['bpp']:.4f} bpp, "
                    f"PSNR-RGB {row['psnr_rgb']:.2f} dB, PSNR-YUV {row['psnr_yuv']:.2f} dB")
        per_image[src.name] = rows
        del src_frames
    if not keep_streams:
        try:
            streams.rmdir()
        except OSError:
            pass
    points = []
    for i, q in enumerate(qs):
        pt = {"q": q}
        for k in POINT_KEYS:
            pt[k] = float(np.mean([per_image[s.name][i][k] for s in sources]))
        points.append(pt)
    result = {"codec": codec_name, "params": dict(params or {}), "qs": qs,
              "inputs": [s.path for s in sources], "points": points, "per_image": per_image}
    with open(out / "rd.json", "w") as f:
        json.dump(result, f, indent=1)
    return result


def curve(result: dict, metric: str = "psnr_rgb") -> tuple[list, list]:
    """(bpp list, metric list) of a sweep result, sorted by rate."""
    pts = sorted(result["points"], key=lambda p: p["bpp"])
    return [p["bpp"] for p in pts], [p[metric] for p in pts]

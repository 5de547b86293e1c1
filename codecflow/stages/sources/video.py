"""Video files decoded with PyAV: one file, or a folder of them (one stream per file, sorted).

Frames come out as yuv420p I420 planes; a file in another pixel format is converted with
``frame.reformat(format="yuv420p")``. Lossless FFV1 ``.mkv`` files in yuv420p decode bit-exactly.
The rate comes from the stream's ``average_rate`` (``source.fps`` overrides it); ``total`` is the
container's frame count when it records one (``meta["frames_estimate"]`` otherwise holds an
estimate from the duration).

Every file is opened when the source is built, so a missing or undecodable file is a SourceError
naming it before anything is written. After each instant is yielded, the stream's ``meta`` holds
``index`` and ``pts`` (the frame's presentation time in seconds, from the file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from codecflow.data import MATRIX_CHOICES, RANGE_CHOICES, Frame, StreamInfo
from codecflow.errors import SourceError
from codecflow.pipeline import schema
from codecflow.stages.sources.base import Source, SourceStream

VIDEO_EXTS = (".mkv", ".mp4", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".m2ts",
              ".y4m", ".flv", ".wmv", ".ogv", ".264", ".h264", ".265", ".hevc", ".ivf", ".nut")
DEFAULT_FPS = 30.0


def _av():
    import av  # local import: PyAV is heavy to import and only file/v4l2 sources need it

    return av


def plane_array(plane) -> np.ndarray:
    """A PyAV VideoPlane -> its pixels as an owned (copied) HxW uint8 array (strips padding)."""
    h, w, ls = plane.height, plane.width, plane.line_size
    buf = np.frombuffer(plane, dtype=np.uint8, count=h * ls).reshape(h, ls)
    return np.ascontiguousarray(buf[:, :w])


def av_frame_to_i420(frame) -> Frame:
    """A PyAV VideoFrame (any pixel format) -> I420 Frame (copied planes)."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    return Frame("yuv420p", [plane_array(p) for p in frame.planes[:3]])


def stream_fps(stream, override: float | None = None) -> float:
    if override:
        return float(override)
    for rate in (stream.average_rate, getattr(stream, "guessed_rate", None), stream.base_rate):
        try:
            if rate and float(rate) > 0:
                return float(rate)
        except (TypeError, ZeroDivisionError):
            continue
    return DEFAULT_FPS


def open_video(path: str):
    """Open a video file -> (container, video stream); SourceError naming the file."""
    av = _av()
    if not os.path.exists(path):
        raise SourceError(f"video source: {path}: no such file")
    try:
        container = av.open(path)
    except Exception as e:  # av.error.* (InvalidDataError, ...) and OSError
        raise SourceError(f"video source: {path}: cannot open as a video file: {e}") from e
    if not container.streams.video:
        container.close()
        raise SourceError(f"video source: {path}: the file has no video stream")
    return container, container.streams.video[0]


def frames_estimate(stream, container, fps: float) -> int | None:
    try:
        if stream.duration and stream.time_base:
            return int(round(float(stream.duration * stream.time_base) * fps))
        dur = stream.metadata.get("DURATION") or stream.metadata.get("duration")
        if dur:
            hh, mm, ss = dur.split(":")
            return int(round((int(hh) * 3600 + int(mm) * 60 + float(ss)) * fps))
        if container.duration:
            return int(round(container.duration / 1_000_000 * fps))
    except (ValueError, TypeError, ZeroDivisionError):
        pass
    return None


def decode_frames(path: str, start: int = 0, limit: int | None = None):
    """Yield (index, pts_seconds, I420 Frame) for the file's first video stream."""
    container, stream = open_video(path)
    stream.thread_type = "AUTO"
    fps = stream_fps(stream)
    i, n = 0, 0
    try:
        try:
            it = container.decode(stream)
            while True:
                if limit is not None and n >= limit:
                    return
                try:
                    f = next(it)
                except StopIteration:
                    return
                if i < start:
                    i += 1
                    continue
                t = f.time if f.time is not None else i / fps
                yield i, float(t), av_frame_to_i420(f)
                i += 1
                n += 1
        except SourceError:
            raise
        except Exception as e:
            av = _av()
            if isinstance(e, (av.error.FFmpegError, OSError, ValueError)):
                raise SourceError(f"video source: {path}: decoding failed at frame {i}: {e}") \
                    from e
            raise
    finally:
        container.close()


def write_video_file(path: str, frames, fps: float = 30.0, codec: str = "ffv1",
                     pix_fmt: str = "yuv420p", pts=None, options: dict | None = None) -> None:
    """Write I420 Frames to a video file with PyAV (FFV1 .mkv by default: lossless, decodes
    back bit-exactly). ``pts``: optional frame times in units of 1/fps (default 0, 1, 2, ...);
    gaps model dropped frames. ``pix_fmt`` other than yuv420p is converted by FFmpeg."""
    from fractions import Fraction

    av = _av()
    frames = list(frames)
    if not frames:
        raise ValueError("write_video_file: no frames")
    w, h = frames[0].width, frames[0].height
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(path, "w") as out:
        st = out.add_stream(codec, rate=rate, options=options or {})
        st.width, st.height, st.pix_fmt = w, h, pix_fmt
        tb = 1 / rate
        st.time_base = tb
        st.codec_context.time_base = tb
        for i, fr in enumerate(frames):
            vf = av.VideoFrame(w, h, "yuv420p")
            for plane, arr in zip(vf.planes, fr.planes):
                buf = np.frombuffer(plane, np.uint8, count=plane.height * plane.line_size)
                buf = buf.reshape(plane.height, plane.line_size)
                if not buf.flags.writeable:  # older PyAV: copy in through update()
                    pad = np.zeros((plane.height, plane.line_size), np.uint8)
                    pad[:, :plane.width] = arr
                    plane.update(pad.tobytes())
                else:
                    buf[:, :plane.width] = arr
            if pix_fmt != "yuv420p":
                vf = vf.reformat(format=pix_fmt)
            vf.pts = int(pts[i]) if pts is not None else i
            vf.time_base = tb  # the muxer may change the stream's time base (mkv: 1/1000)
            for pkt in st.encode(vf):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


@dataclass
class _VideoFile:
    path: str
    name: str
    width: int
    height: int
    fps: float
    total: int | None
    estimate: int | None
    pix_fmt: str


class VideoFileSource(Source):
    """Video file(s) through PyAV (FFV1, H.264, ... anything FFmpeg decodes)."""

    live = False

    @dataclass
    class Config:
        path: str = field(metadata={"help": "a video file, or a folder of them"})
        frames: int | None = schema.number(None, min=1, help="read at most this many frames")
        start: int = schema.number(0, min=0, help="skip this many frames at the start")
        fps: float | None = schema.number(None, min=0.001,
                                          help="frame rate (overrides the file's)")
        matrix: str = schema.choice("bt709", MATRIX_CHOICES, help="YUV<->RGB matrix")
        range: str = schema.choice("limited", RANGE_CHOICES, help="YUV code range")

    def __init__(self, config, mode: str = "offline"):
        super().__init__(config, mode)
        self._gens: list = []
        self.files = self.validate()

    def _paths(self) -> list[str]:
        p = self.config.path
        if not os.path.exists(p):
            raise SourceError(f"video source: {p}: no such file or folder")
        if os.path.isdir(p):
            files = sorted(os.path.join(p, f) for f in os.listdir(p)
                           if f.lower().endswith(VIDEO_EXTS) and os.path.isfile(os.path.join(p, f)))
            if not files:
                raise SourceError(f"video source: folder {p} contains no video files "
                                  f"({', '.join(VIDEO_EXTS)})")
            return files
        return [p]

    def validate(self) -> list[_VideoFile]:
        """Open every file and read its geometry; SourceError naming a bad file."""
        out, names = [], set()
        for p in self._paths():
            container, stream = open_video(p)
            try:
                cc = stream.codec_context
                # decode the first frame: proves the file decodes, and gives the real size
                try:
                    f = next(container.decode(stream))
                except StopIteration:
                    raise SourceError(f"video source: {p}: the video stream has no frames") \
                        from None
                except Exception as e:
                    raise SourceError(f"video source: {p}: cannot decode: {e}") from e
                w, h = f.width, f.height
                fps = stream_fps(stream, self.config.fps)
                total = int(stream.frames) if stream.frames and stream.frames > 0 else None
                est = total if total is not None else frames_estimate(stream, container, fps)
                pix_fmt = cc.pix_fmt or "?"
            finally:
                container.close()
            start, lim = self.config.start, self.config.frames
            if total is not None:
                if start >= total:
                    raise SourceError(f"video source: {p}: source.start={start} but the file has "
                                      f"only {total} frames")
                total -= start
                if lim is not None:
                    total = min(total, lim)
            if est is not None:
                est = max(0, est - start)
                if lim is not None:
                    est = min(est, lim)
            name = os.path.splitext(os.path.basename(p))[0]
            if name in names:
                name = os.path.basename(p)
            names.add(name)
            out.append(_VideoFile(p, name, w, h, fps, total, est, pix_fmt))
        return out

    def _read(self, f: _VideoFile, meta: dict):
        for i, t, frame in decode_frames(f.path, self.config.start, self.config.frames):
            if frame.width != f.width or frame.height != f.height:
                raise SourceError(f"video source: {f.path}: frame {i} is {frame.width}x"
                                  f"{frame.height}, the stream started at {f.width}x{f.height} "
                                  f"(size changes inside a file are not supported)")
            meta["index"] = i
            meta["pts"] = t
            yield [frame]

    def streams(self):
        c = self.config
        for f in self.files:
            info = StreamInfo(width=f.width, height=f.height, pix_fmt="yuv420p", views=1,
                              fps=f.fps, matrix=c.matrix, range=c.range)
            meta = {"path": f.path, "file_pix_fmt": f.pix_fmt, "frames_estimate": f.estimate}
            gen = self._read(f, meta)
            self._gens.append(gen)
            yield SourceStream(f.name, info, gen, total=f.total, meta=meta)

    def close(self) -> None:
        for g in self._gens:
            g.close()
        self._gens.clear()

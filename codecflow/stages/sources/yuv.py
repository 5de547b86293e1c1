"""Raw 8-bit I420 (yuv420p) files: one ``.yuv`` file, or a folder of them (one stream per file).

Geometry comes from the usual test-sequence name ``NAME_WxH_FPS.yuv`` (``NAME_WxH.yuv`` too, the
rate then comes from the config or defaults to 30) or from the config keys ``width`` /
``height`` / ``fps``, which override the name. Every file is checked when the source is built:
a file whose size is not a whole number of frames is a SourceError before anything is read, so
a pipeline fails before it writes anything.

Frames are read one at a time with numpy (memory-light; a file is never loaded whole).

Per-instant metadata: after each instant is yielded, the stream's ``meta`` holds ``index`` (frame
number within the file) and ``pts`` (seconds since the first yielded frame, ``i / fps``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from codecflow.data import MATRIX_CHOICES, RANGE_CHOICES, StreamInfo, check_frame_size
from codecflow.errors import SourceError
from codecflow.media import i420_frame_size, parse_yuv_name, split_i420
from codecflow.pipeline import schema
from codecflow.stages.sources.base import Source, SourceStream

DEFAULT_FPS = 30.0

@dataclass
class _YuvFile:
    path: str
    name: str
    width: int
    height: int
    fps: float
    frame_size: int
    count: int  # whole frames in the file


def _yuv_files(path: str) -> list[str]:
    if not os.path.exists(path):
        raise SourceError(f"yuv source: {path}: no such file or folder")
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.lower().endswith(".yuv") and os.path.isfile(os.path.join(path, f)))
        if not files:
            raise SourceError(f"yuv source: folder {path} contains no .yuv files")
        return files
    return [path]


class YuvSource(Source):
    """Raw I420 8-bit file, or a folder of ``.yuv`` files (sorted; one stream per file, named by
    the file stem)."""

    live = False

    @dataclass
    class Config:
        path: str = field(metadata={"help": "a raw I420 .yuv file, or a folder of them"})
        width: int | None = schema.number(None, min=1, help="frame width (overrides the name)")
        height: int | None = schema.number(None, min=1, help="frame height (overrides the name)")
        fps: float | None = schema.number(None, min=0.001,
                                          help="frame rate (overrides the name; default 30)")
        frames: int | None = schema.number(None, min=1, help="read at most this many frames")
        start: int = schema.number(0, min=0, help="skip this many frames at the start")
        matrix: str = schema.choice("bt709", MATRIX_CHOICES, help="YUV<->RGB matrix")
        range: str = schema.choice("limited", RANGE_CHOICES, help="YUV code range")

    def __init__(self, config, mode: str = "offline"):
        super().__init__(config, mode)
        self._gens: list = []
        self.files = self.validate()

    # ------------------------------------------------------------------------ validation
    def _geometry(self, path: str) -> tuple[int, int, float]:
        c = self.config
        parsed = parse_yuv_name(path)
        w = c.width if c.width is not None else (parsed[0] if parsed else None)
        h = c.height if c.height is not None else (parsed[1] if parsed else None)
        if w is None or h is None:
            raise SourceError(
                f"yuv source: {path}: cannot tell the frame size: the name does not follow "
                f"NAME_WxH_FPS.yuv (e.g. clip_1920x1080_30.yuv); set source.width and "
                f"source.height")
        check_frame_size(w, h, f"yuv source: {path}")
        fps = c.fps if c.fps is not None else (parsed[2] if parsed and parsed[2] else DEFAULT_FPS)
        return w, h, float(fps)

    def validate(self) -> list[_YuvFile]:
        """Check every file up front (size, whole frames, start); raises SourceError."""
        c = self.config
        out, names = [], set()
        for p in _yuv_files(c.path):
            w, h, fps = self._geometry(p)
            fs = i420_frame_size(w, h)
            try:
                size = os.path.getsize(p)
                with open(p, "rb"):  # readable now, not only once the run has started
                    pass
            except OSError as e:
                raise SourceError(f"yuv source: {p}: cannot read: {e.strerror or e}") from e
            count, rem = divmod(size, fs)
            if rem:
                raise SourceError(
                    f"yuv source: {os.path.basename(p)}: file size {size} bytes is not a whole "
                    f"number of {w}x{h} I420 frames ({fs} bytes each): {count} whole frames and "
                    f"{rem} bytes left over (remainder {rem}); check the size in the name or "
                    f"source.width/height ({p})")
            if count == 0:
                raise SourceError(f"yuv source: {p}: file is empty (0 frames)")
            if c.start >= count:
                raise SourceError(f"yuv source: {p}: source.start={c.start} but the file has only "
                                  f"{count} frames")
            name = os.path.splitext(os.path.basename(p))[0]
            if name in names:
                name = os.path.basename(p)
            names.add(name)
            out.append(_YuvFile(p, name, w, h, fps, fs, count))
        return out

    # --------------------------------------------------------------------------- reading
    def _count(self, f: _YuvFile) -> int:
        n = f.count - self.config.start
        return min(n, self.config.frames) if self.config.frames is not None else n

    def _read(self, f: _YuvFile, meta: dict):
        """Frames are views into a read-only memory map of the file: the planes go to the
        encode workers without a copy into this process first."""
        n = self._count(f)
        if n <= 0:
            return
        mm = np.memmap(f.path, dtype=np.uint8, mode="r")
        for i in range(n):
            off = (self.config.start + i) * f.frame_size
            buf = mm[off:off + f.frame_size]
            if buf.size != f.frame_size:
                raise SourceError(f"yuv source: {f.path}: frame {self.config.start + i} is "
                                  f"truncated ({buf.size} of {f.frame_size} bytes; was the "
                                  f"file changed while reading?)")
            meta["index"] = self.config.start + i
            meta["pts"] = i / f.fps
            yield [split_i420(np.asarray(buf), f.width, f.height)]

    def streams(self):
        c = self.config
        for f in self.files:
            info = StreamInfo(width=f.width, height=f.height, pix_fmt="yuv420p", views=1,
                              fps=f.fps, matrix=c.matrix, range=c.range)
            meta = {"path": f.path, "start": c.start, "file_frames": f.count}
            gen = self._read(f, meta)
            self._gens.append(gen)
            yield SourceStream(f.name, info, gen, total=self._count(f), meta=meta)

    def close(self) -> None:
        for g in self._gens:
            g.close()
        self._gens.clear()

"""Reconstruction sink: what the decoder reproduces, as raw I420 .yuv or PNG files."""

from __future__ import annotations

import io
import os

import cv2

from codecflow.codecs import colour
from codecflow.codecs.container import write_whole
from codecflow.data import StreamInfo
from codecflow.media import parse_yuv_name, write_i420


def _fps_tag(fps: float) -> str:
    return str(int(fps)) if float(fps).is_integer() else f"{fps:g}"


class ReconWriter:
    """Per stream. YUV: <stream>_<W>x<H>_<fps>.yuv (stereo: _L/_R files); PNG: <stream>.png for a
    single picture, <stream>_<frame:05d>.png for sequences (stereo: _L/_R suffixes)."""

    def __init__(self, out_dir: str, stream: str, info: StreamInfo, fmt: str, total: int | None,
                 subdir: str = "recon", exact_name: str | None = None):
        self.info = info
        self.fmt = ("png" if info.pix_fmt == "rgb24" else "yuv") if fmt == "auto" else fmt
        self.dir = os.path.join(out_dir, subdir) if subdir else out_dir
        os.makedirs(self.dir, exist_ok=True)
        self.stream = stream
        self.single = total == 1
        self.paths: list[str] = []
        self._files = []
        self._new_pngs: list[str] = []  # PNGs written since the last mark()
        if self.fmt == "yuv":
            tag = f"{info.width}x{info.height}_{_fps_tag(info.fps)}"
            base = exact_name or stream
            # NAME_WxH_FPS.yuv, the test-sequence convention; a stream named after such a file
            # already carries its size and rate (the reconstruction keeps both)
            named = parse_yuv_name(stream + ".yuv")
            has_tag = named is not None and named[:2] == (info.width, info.height) and (
                named[2] is None or named[2] == float(info.fps))
            suffix = "" if exact_name or has_tag else f"_{tag}"
            names = ([f"{base}_L{suffix}.yuv", f"{base}_R{suffix}.yuv"] if info.views == 2
                     else [f"{base}{suffix}.yuv"])
            self.paths = [os.path.join(self.dir, n) for n in names]
            self._files = [open(p, "wb", buffering=0) for p in self.paths]

    def mark(self) -> list:
        """Where the files stand now, for `rollback`."""
        self._new_pngs = []
        return [f.tell() for f in self._files]

    def rollback(self, mark: list) -> None:
        """Undo what was written since ``mark`` (a unit whose other outputs failed)."""
        for f, pos in zip(self._files, mark):
            f.truncate(pos)
            f.seek(pos)
        for path in self._new_pngs:
            if os.path.exists(path):
                os.remove(path)
        self._new_pngs = []

    def write(self, first_frame: int, frames: list, views: int) -> None:
        """Each picture is written whole or not at all: on a full disk the file is cut back to
        its last whole frame (or the partial PNG removed) and the OSError raised."""
        per_instant = [frames[i:i + views] for i in range(0, len(frames), views)]
        for k, inst in enumerate(per_instant):
            n = first_frame + k
            for v, fr in enumerate(inst):
                if self.fmt == "yuv":
                    buf = io.BytesIO()
                    write_i420(buf, fr, self.info.matrix, self.info.range)
                    write_whole(self._files[v], buf.getbuffer())
                else:
                    suffix = ("_L", "_R")[v] if views == 2 else ""
                    name = (f"{self.stream}{suffix}.png" if self.single
                            else f"{self.stream}_{n:05d}{suffix}.png")
                    path = os.path.join(self.dir, name)
                    rgb = colour.to_rgb(fr, self.info.matrix, self.info.range)
                    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                    if not ok:
                        raise OSError(f"cannot encode {path} as PNG")
                    self._new_pngs.append(path)
                    try:
                        with open(path, "wb") as f:
                            f.write(png.tobytes())
                    except OSError:
                        if os.path.exists(path):
                            os.remove(path)
                        raise
                    if path not in self.paths and len(self.paths) < 4:
                        self.paths.append(path)

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []

"""Stats: per-unit JSON lines, per-stream and run totals, summary.json (see docs/stats.md).

Rate comes from the bytes actually written to the .cfl (file header, record headers, CRCs and
the end record included). PSNR comes from the reconstruction the decoder produces.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from codecflow.data import PSNR_KEYS


class PsnrMean:
    """Running means of the per-picture PSNR rows: constant memory however long the run."""

    def __init__(self):
        self.n = 0
        self.sums = dict.fromkeys(PSNR_KEYS, 0.0)

    def add(self, row: dict) -> None:
        self.n += 1
        for k in PSNR_KEYS:
            self.sums[k] += float(row[k])

    def merge(self, other: "PsnrMean") -> None:
        self.n += other.n
        for k in PSNR_KEYS:
            self.sums[k] += other.sums[k]

    def mean(self) -> dict:
        if not self.n:
            return dict.fromkeys(PSNR_KEYS)
        return {k: self.sums[k] / self.n for k in PSNR_KEYS}


class StreamStats:
    def __init__(self, name: str, info: dict, total: int | None, meta: dict):
        self.name, self.info, self.total, self.meta = name, info, total, meta
        self.units = 0
        self.frames = 0  # time instants (a stereo pair counts once)
        self.bytes = 0
        self.psnr = PsnrMean()
        self.psnr_views = [PsnrMean(), PsnrMean()]  # stereo: rows alternate left, right
        self.encode_s = 0.0
        self.latency_sum, self.latency_n = 0.0, 0
        self.dropped = 0
        self.t_start = time.monotonic()
        self.t_end = None
        self.file = None
        self.recon_files: list = []
        self.complete = False
        self.reason: str | None = None  # why the stream is not complete
        self.view_bytes = [0] * int(info.get("views", 1))  # record bytes per view
        self.side_info: dict = {}  # learned-stereo-si: status -> views ("refined", ...)

    @property
    def pixels_per_frame(self) -> int:
        return int(self.info["width"]) * int(self.info["height"]) * int(self.info["views"])

    def add_unit(self, n_frames: int, nbytes: int, metrics: list, encode_s: float,
                 latency_s: float, view_bytes: list | None = None) -> None:
        for v, n in enumerate(view_bytes or []):
            self.view_bytes[v] += n
        self.units += 1
        self.frames += n_frames
        self.bytes += nbytes
        for row in metrics:
            self.psnr_views[self.psnr.n % 2].add(row)
            self.psnr.add(row)
        self.encode_s += encode_s
        self.latency_sum += latency_s
        self.latency_n += 1

    def summary(self) -> dict:
        elapsed = (self.t_end or time.monotonic()) - self.t_start
        fps_src = float(self.info.get("fps") or 0.0)
        d = {"frames": self.frames, "units": self.units, "bytes": self.bytes,
             "bpp": 8.0 * self.bytes / (self.pixels_per_frame * self.frames) if self.frames else 0.0,
             "kbps": 8.0 * self.bytes * fps_src / self.frames / 1000.0 if self.frames else 0.0,
             "fps": self.frames / elapsed if elapsed > 0 else 0.0,
             "dropped": self.dropped, "elapsed_s": elapsed,
             "width": self.info["width"], "height": self.info["height"],
             "views": self.info["views"], "pix_fmt": self.info["pix_fmt"],
             "source_fps": fps_src, "unit_kind": self.info["unit_kind"],
             "encode_s_per_frame": self.encode_s / self.frames if self.frames else 0.0,
             "latency_s_mean": self.latency_sum / self.latency_n if self.latency_n else 0.0,
             "file": self.file, "recon": self.recon_files, "complete": self.complete}
        if self.reason:
            d["incomplete_reason"] = self.reason
        d.update(self.psnr.mean())
        if len(self.view_bytes) == 2:
            d["per_view"] = self._per_view()
        if self.meta.get("path"):
            d["source"] = self.meta["path"]
        if self.side_info:
            d["side_info"] = dict(self.side_info)
        return d


    def _per_view(self) -> dict:
        """Stereo: bytes of each view's records, bpp over one view's pixels, PSNR of its
        pictures (metric rows alternate left, right). The file header and end record are in
        the stream's total only."""
        px = int(self.info["width"]) * int(self.info["height"]) * self.frames
        out = {}
        for v, name in enumerate(("left", "right")):
            paired = self.psnr.n % 2 == 0
            out[name] = {"bytes": self.view_bytes[v],
                         "bpp": 8.0 * self.view_bytes[v] / px if px else 0.0,
                         **(self.psnr_views[v].mean() if paired else PsnrMean().mean())}
        return out


def run_summary(streams: dict, elapsed: float, dropped_frames: int, extra: dict) -> dict:
    """Totals over all streams (top level) plus per-stream entries under "streams"."""
    per = {name: s.summary() for name, s in streams.items()}
    frames = sum(s.frames for s in streams.values())
    nbytes = sum(s.bytes for s in streams.values())
    pixels = sum(s.pixels_per_frame * s.frames for s in streams.values())
    duration = sum(s.frames / float(s.info.get("fps") or 1.0) for s in streams.values())
    psnr = PsnrMean()
    for s in streams.values():
        psnr.merge(s.psnr)
    total = {"frames": frames, "units": sum(s.units for s in streams.values()), "bytes": nbytes,
             "bpp": 8.0 * nbytes / pixels if pixels else 0.0,
             "kbps": 8.0 * nbytes / duration / 1000.0 if duration else 0.0,
             "fps": frames / elapsed if elapsed > 0 else 0.0,
             "dropped": dropped_frames, "elapsed_s": elapsed, "streams_count": len(streams)}
    total.update(psnr.mean())
    if len(streams) > 1:  # mean of per-stream values, as image benchmarks report them
        total["mean_stream_bpp"] = float(np.mean([p["bpp"] for p in per.values()]))
    total.update(extra)
    total["streams"] = per
    return total


def write_json_atomic(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=float)
        f.write("\n")
    os.replace(tmp, path)

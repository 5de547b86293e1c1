"""A stereo rig: two cameras paired by capture time, or one side-by-side camera.

``layout: pair`` (default): ``left`` and ``right`` are camera indices or paths. Each camera is read
in its own capture thread (camera.CaptureThread) which stamps every frame with its capture time
on the monotonic clock. The pairing loop looks at the oldest buffered frame of each side: if their
timestamps differ by at most ``max_skew_ms`` they form a pair (one instant, ``[left, right]``);
otherwise the older frame can have no partner any more, so it is dropped and counted
(``meta["unpaired"]``). ``left`` / ``right`` may also be video files (for tests and demos without
cameras): they are decoded with PyAV, stamped with their presentation times (so two files with
the same timing pair frame by frame, and a frame missing from one file drops its partner in the
other), read losslessly, and the source is then not live.

``layout: side_by_side``: one camera (``device``) delivering both views in one frame; each frame
is split into its left and right halves (an odd width is a SourceError). A video file works here
too.

After each instant is yielded, the stream's ``meta`` holds ``index``, ``capture_ts`` (the left
frame's capture time), ``skew_ms`` (left minus right capture time), ``pts`` (seconds since the
first pair), ``dropped`` (all frames dropped so far), ``unpaired`` {left, right} and
``overwritten`` {left, right} (frames the capture threads replaced before they were consumed).
Cameras are opened, and their first frames awaited, when the source is built: a missing device is
a SourceError before the pipeline writes anything.
"""

from __future__ import annotations

import logging

from dataclasses import dataclass

from codecflow.data import MATRIX_CHOICES, RANGE_CHOICES, StreamInfo
from codecflow.errors import ConfigError, SourceError
from codecflow.pipeline import schema
from codecflow.stages.sources.base import Source, SourceStream
from codecflow.stages.sources.camera import (BACKENDS, CaptureThread, device_label, is_video_file,
                                             normalise_device, start_capture, to_views)

LAYOUTS = ("pair", "side_by_side")
LIVE_BUFFER = 2  # frames buffered per camera in live mode (bounded staleness, room to pair)



log = logging.getLogger("codecflow.source")


class StereoRigSource(Source):
    """Two cameras (or video files) paired by timestamp, or one side-by-side camera."""

    live = True

    @dataclass
    class Config:
        layout: str = schema.choice("pair", LAYOUTS, help="pair: two cameras; side_by_side: one")
        left: int | str | None = schema.option(None, "left camera (index, /dev path, or a video file)")
        right: int | str | None = schema.option(None, "right camera (index, /dev path, or a video file)")
        device: int | str | None = schema.option(None, "side_by_side: the camera (or video file)")
        max_skew_ms: float = schema.number(20.0, min=0.0,
                                           help="pair frames captured at most this far apart")
        width: int | None = schema.number(None, min=1,
                                          help="requested width of each camera's frame")
        height: int | None = schema.number(None, min=1, help="requested height")
        fps: float | None = schema.number(None, min=0.001, help="requested frame rate")
        mjpeg: bool = schema.option(False, "request the MJPEG fourcc")
        backend: str = schema.choice("opencv", BACKENDS, help="capture library")
        frames: int | None = schema.number(None, min=1, help="stop after this many pairs")
        matrix: str = schema.choice("bt709", MATRIX_CHOICES, help="RGB->YUV matrix")
        range: str = schema.choice("limited", RANGE_CHOICES, help="YUV code range")
        name: str = schema.option("stereo", "stream name")

    def __init__(self, config, mode: str = "offline"):
        super().__init__(config, mode)
        c = config
        self.captures: list[CaptureThread] = []
        if c.layout == "pair":
            if c.left is None or c.right is None:
                raise ConfigError("source: a stereo_rig with layout 'pair' needs both 'left' and "
                                  "'right' (camera index, /dev path or video file)")
            if c.device is not None:
                raise ConfigError("source.device: only for layout 'side_by_side'; a 'pair' rig "
                                  "uses 'left' and 'right'")
            left, right = normalise_device(c.left), normalise_device(c.right)
            if left == right:
                raise ConfigError(f"source: left and right are the same device ({left!r})")
            if is_video_file(left) != is_video_file(right):
                raise ConfigError("source: left and right must both be cameras or both be video "
                                  "files (their timestamps are not comparable otherwise)")
            self.devices = [left, right]
        else:
            if c.device is None:
                raise ConfigError("source.device: required for a side_by_side stereo_rig")
            if c.left is not None or c.right is not None:
                # e.g. configs/stereo_cam.yaml names a pair and the command line switches the
                # layout: the layout decides which keys count
                log.warning("stereo_rig: layout side_by_side reads 'device' %s; 'left' (%s) and "
                            "'right' (%s) are for layout 'pair' and are ignored", c.device,
                            c.left, c.right)
            self.devices = [normalise_device(c.device)]
        try:
            for dev in self.devices:
                self.captures.append(start_capture(dev, c.backend, c.width, c.height, c.fps,
                                                   c.mjpeg, mode, maxlen_live=LIVE_BUFFER))
            self.info = self._check_geometry()
        except BaseException:
            self.close()
            raise
        self.live = any(cap.grabber.live for cap in self.captures)

    def _check_geometry(self) -> StreamInfo:
        c = self.config
        g = [cap.grabber for cap in self.captures]
        if c.layout == "pair":
            (l, r), (ll, rl) = g, [device_label(d) for d in self.devices]
            if (l.width, l.height) != (r.width, r.height):
                raise SourceError(f"stereo_rig: left {ll} delivers {l.width}x{l.height} but right "
                                  f"{rl} delivers {r.width}x{r.height}; both views must have the "
                                  f"same size")
            w, h = l.width, l.height
        else:
            d = g[0]
            if d.width % 2:
                raise SourceError(f"stereo_rig side_by_side: {device_label(self.devices[0])} "
                                  f"delivers {d.width}x{d.height}; an odd width cannot be split "
                                  f"into two equal halves")
            w, h = d.width // 2, d.height
        return StreamInfo(width=w, height=h, pix_fmt="yuv420p", views=2,
                          fps=float(g[0].fps), matrix=c.matrix, range=c.range)

    # --------------------------------------------------------------------------- frames
    def _update(self, meta, n, ts, t0, skew_ms):
        meta["index"] = n
        meta["capture_ts"] = ts
        meta["pts"] = ts - t0
        meta["skew_ms"] = skew_ms
        over = [cap.dropped for cap in self.captures]
        if len(over) == 1:
            over = over * 2
        meta["overwritten"] = {"left": over[0], "right": over[1]}
        meta["dropped"] = sum(meta["unpaired"].values()) + sum(cap.dropped
                                                               for cap in self.captures)

    def _side_by_side(self, meta):
        c, cap = self.config, self.captures[0]
        n, t0 = 0, None
        while c.frames is None or n < c.frames:
            item = cap.get()
            if item is None:
                return
            if t0 is None:
                t0 = item.ts
            pictures = to_views(item, True, c.matrix, c.range)
            if pictures[0].width != self.info.width or pictures[0].height != self.info.height:
                raise SourceError(f"stereo_rig: {device_label(self.devices[0])}: frame size "
                                  f"changed (views {pictures[0].width}x{pictures[0].height}, "
                                  f"stream {self.info.width}x{self.info.height})")
            self._update(meta, n, item.ts, t0, 0.0)
            n += 1
            yield pictures

    def _pairs(self, meta):
        c = self.config
        lcap, rcap = self.captures
        skew = c.max_skew_ms / 1000.0 + 1e-9
        n, t0 = 0, None
        while c.frames is None or n < c.frames:
            l, r = lcap.peek(), rcap.peek()
            if l is None or r is None:
                return
            dt = l.ts - r.ts
            if abs(dt) <= skew:
                lcap.discard(l)
                rcap.discard(r)
                if t0 is None:
                    t0 = l.ts
                pictures = to_views(l, False, c.matrix, c.range) + \
                    to_views(r, False, c.matrix, c.range)
                for side, v in zip(("left", "right"), pictures):
                    if v.width != self.info.width or v.height != self.info.height:
                        raise SourceError(f"stereo_rig: {side} frame size changed to {v.width}x"
                                          f"{v.height} (stream {self.info.width}x"
                                          f"{self.info.height})")
                self._update(meta, n, l.ts, t0, dt * 1000.0)
                n += 1
                yield pictures
            elif dt < 0:  # left is older: no right frame can match it any more
                lcap.discard(l)
                meta["unpaired"]["left"] += 1
            else:
                rcap.discard(r)
                meta["unpaired"]["right"] += 1

    def streams(self):
        meta = {"devices": [str(d) for d in self.devices], "layout": self.config.layout,
                "capture_ts": None, "dropped": 0, "unpaired": {"left": 0, "right": 0},
                "overwritten": {"left": 0, "right": 0}}
        gen = self._pairs(meta) if self.config.layout == "pair" else self._side_by_side(meta)
        yield SourceStream(self.config.name, self.info, gen, total=self.config.frames, meta=meta)

    def close(self) -> None:
        for cap in self.captures:
            cap.stop()
        self.captures = []

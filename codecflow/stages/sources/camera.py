"""One live camera, through OpenCV (default backend) or PyAV's v4l2 demuxer (``backend: pyav``).

The device is opened, and its first frame awaited, when the source is built: a missing or
unusable camera is a SourceError ("camera /dev/video3: cannot open ...") before the pipeline
writes anything. A capture thread reads the device continuously so the driver's queue never
fills with stale frames; it keeps only the newest frames (1 in ``live`` mode, a short buffer in
``offline`` mode) and counts the ones it overwrote.

Timestamps: each captured frame carries a capture time in seconds on the ``time.monotonic()``
clock (the V4L2 buffer timestamp when OpenCV reports one on that clock, else the time the grab
returned), so frames of two cameras read in two threads can be paired (see stereo_rig). After
each instant is yielded, the stream's ``meta`` holds ``index``, ``capture_ts`` (that monotonic
time), ``pts`` (seconds since the stream's first frame) and ``dropped`` (frames the capture thread
overwrote before they were consumed).

BGR frames are converted to I420 with ``colour.rgb_to_i420`` using the stream's matrix and range;
the PyAV backend yields yuv420p directly (converted by FFmpeg if the device gives another format).

For tests and demos without a camera, ``device`` may also be a video file: it is decoded with
PyAV, stamped with the file's presentation times, and read losslessly (nothing dropped), and the
source is then not live.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from codecflow.codecs import colour
from codecflow.data import MATRIX_CHOICES, RANGE_CHOICES, Frame, StreamInfo
from codecflow.errors import SourceError
from codecflow.pipeline import schema
from codecflow.stages.sources.base import Source, SourceStream

BACKENDS = ("opencv", "pyav")
OPEN_TIMEOUT_S = 5.0  # the first frame must arrive within this
READ_TIMEOUT_S = 5.0  # a camera that delivers nothing for this long is an error
DEFAULT_FPS = 30.0



# ------------------------------------------------------------------------------- devices
def device_label(device) -> str:
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        return f"camera {int(device)}"
    return f"camera {device}"


def normalise_device(device):
    """'0' -> 0; paths stay strings."""
    if isinstance(device, str) and device.strip().isdigit():
        return int(device.strip())
    return device


def is_video_file(device) -> bool:
    return isinstance(device, str) and os.path.isfile(device) and not device.startswith("/dev/")


def _check_exists(device) -> None:
    """Fail fast (no backend noise) when a V4L2 device node is absent."""
    label = device_label(device)
    if isinstance(device, int):
        if device < 0:
            raise SourceError(f"{label}: cannot open: a device index must be >= 0")
        if sys.platform.startswith("linux") and not os.path.exists(f"/dev/video{device}"):
            raise SourceError(f"{label}: cannot open: /dev/video{device} does not exist "
                              f"(no such camera; is it plugged in?)")
    elif isinstance(device, str):
        if not os.path.exists(device):
            raise SourceError(f"{label}: cannot open: no such device")
    else:
        raise SourceError(f"{label}: cannot open: device must be an index or a path")


@dataclass
class Captured:
    frame: object  # BGR HxWx3 ndarray ("bgr") or I420 Frame ("i420")
    kind: str
    ts: float  # capture time, seconds (monotonic clock; file pts for file devices)
    index: int


class _Grabber:
    """Backend-specific device reader: ``grab() -> (kind, frame, ts)`` or None at the end."""

    width = height = 0
    fps = DEFAULT_FPS
    live = True

    def grab(self):
        raise NotImplementedError

    def close(self):
        pass


class _OpenCVGrabber(_Grabber):
    def __init__(self, device, width, height, fps, mjpeg):
        import cv2

        self.cv2 = cv2
        self.label = device_label(device)
        if isinstance(device, str) and device.startswith("/dev/") and \
                sys.platform.startswith("linux"):
            cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        else:
            cap = cv2.VideoCapture(device)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.label}: cannot open (busy, not a camera, or no permission)")
        if mjpeg:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self.cap = cap
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        rep = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(rep) if rep and 0 < rep < 1000 else float(fps or DEFAULT_FPS)
        self._failures = 0

    def grab(self):
        cv2 = self.cv2
        ok = self.cap.grab()
        now = time.monotonic()
        if not ok:
            self._failures += 1
            if self._failures >= 50:
                raise SourceError(f"{self.label}: reading failed 50 times in a row "
                                  f"(unplugged?)")
            time.sleep(0.01)
            return "retry"
        self._failures = 0
        ok, img = self.cap.retrieve()
        if not ok or img is None:
            return "retry"
        # V4L2 buffer timestamps are on CLOCK_MONOTONIC with most drivers: prefer them
        ts = now
        dev = self.cap.get(cv2.CAP_PROP_POS_MSEC)
        if dev and 0.0 <= now - dev / 1000.0 < 1.0:
            ts = dev / 1000.0
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        return "bgr", img, ts

    def close(self):
        self.cap.release()


class _PyAVGrabber(_Grabber):
    def __init__(self, device, width, height, fps, mjpeg):
        from codecflow.stages.sources.video import _av

        av = _av()
        self.label = device_label(device)
        path = f"/dev/video{device}" if isinstance(device, int) else device
        opts = {}
        if width and height:
            opts["video_size"] = f"{width}x{height}"
        if fps:
            opts["framerate"] = f"{fps:g}"
        if mjpeg:
            opts["input_format"] = "mjpeg"
        try:
            self.container = av.open(path, format="v4l2", options=opts)
        except Exception as e:
            raise SourceError(f"{self.label}: cannot open with PyAV/v4l2: {e}") from e
        if not self.container.streams.video:
            self.container.close()
            raise SourceError(f"{self.label}: the device has no video stream")
        st = self.container.streams.video[0]
        self.width, self.height = st.codec_context.width, st.codec_context.height
        from codecflow.stages.sources.video import stream_fps

        self.fps = stream_fps(st, None) if not fps else float(fps)
        self._it = self.container.decode(st)

    def grab(self):
        from codecflow.stages.sources.video import av_frame_to_i420

        try:
            f = next(self._it)
        except StopIteration:
            return None
        except Exception as e:
            raise SourceError(f"{self.label}: reading failed: {e}") from e
        return "i420", av_frame_to_i420(f), time.monotonic()

    def close(self):
        self.container.close()


class _FileGrabber(_Grabber):
    """A video file standing in for a camera (tests, demos): pts timestamps, nothing dropped."""

    live = False

    def __init__(self, path, fps=None):
        from codecflow.stages.sources.video import decode_frames, open_video, stream_fps

        container, st = open_video(path)
        try:
            self.width, self.height = st.codec_context.width, st.codec_context.height
            self.fps = stream_fps(st, fps)
        finally:
            container.close()
        self._it = decode_frames(path)

    def grab(self):
        try:
            _, t, frame = next(self._it)
        except StopIteration:
            return None
        return "i420", frame, t

    def close(self):
        try:
            self._it.close()
        except ValueError:  # still running in the capture thread; it ends with the process
            pass


def open_grabber(device, backend="opencv", width=None, height=None, fps=None, mjpeg=False):
    device = normalise_device(device)
    if is_video_file(device):
        return _FileGrabber(device, fps)
    _check_exists(device)
    if backend == "pyav":
        return _PyAVGrabber(device, width, height, fps, mjpeg)
    return _OpenCVGrabber(device, width, height, fps, mjpeg)


# ------------------------------------------------------------------------- capture thread
class CaptureThread(threading.Thread):
    """Reads a grabber continuously into a small buffer.

    ``drop=True`` (live cameras): when the buffer is full the oldest frame is overwritten and
    counted in ``dropped``. ``drop=False`` (files): the thread waits for room (lossless).
    """

    def __init__(self, grabber: _Grabber, label: str, maxlen: int = 1, drop: bool = True):
        super().__init__(name=f"capture-{label}", daemon=True)
        self.grabber = grabber
        self.label = label
        self.maxlen = max(1, int(maxlen))
        self.drop = drop
        self.buf: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.dropped = 0
        self.captured = 0
        self.error: BaseException | None = None
        self.eof = False
        self._halt = threading.Event()

    def run(self):
        try:
            while not self._halt.is_set():
                item = self.grabber.grab()
                if item == "retry":
                    continue
                if item is None:
                    break
                kind, frame, ts = item
                with self.cond:
                    if self.drop:
                        while len(self.buf) >= self.maxlen:
                            self.buf.popleft()
                            self.dropped += 1
                    else:
                        while len(self.buf) >= self.maxlen and not self._halt.is_set():
                            self.cond.wait(0.1)
                    self.buf.append(Captured(frame, kind, float(ts), self.captured))
                    self.captured += 1
                    self.cond.notify_all()
        except BaseException as e:  # delivered to the consumer
            self.error = e
        finally:
            with self.cond:
                self.eof = True
                self.cond.notify_all()

    def _wait(self, timeout: float | None) -> bool:
        """Wait until a frame is buffered; False at the end of the input."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not self.buf:
                if self.eof:
                    if self.error is not None:
                        if isinstance(self.error, SourceError):
                            raise self.error
                        raise SourceError(f"{self.label}: capture failed: {self.error}") \
                            from self.error
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise SourceError(f"{self.label}: no frame for {timeout:g} s "
                                      f"(camera stalled or unplugged?)")
                self.cond.wait(0.1 if left is None else min(left, 0.1))
            return True

    def peek(self, timeout: float | None = READ_TIMEOUT_S) -> Captured | None:
        if not self._wait(timeout):
            return None
        with self.cond:
            return self.buf[0]

    def get(self, timeout: float | None = READ_TIMEOUT_S) -> Captured | None:
        if not self._wait(timeout):
            return None
        with self.cond:
            item = self.buf.popleft()
            self.cond.notify_all()
            return item

    def discard(self, item: Captured) -> None:
        """Remove `item` if it is still the oldest buffered frame (a live capture thread may
        have overwritten it meanwhile, which is fine)."""
        with self.cond:
            if self.buf and self.buf[0] is item:
                self.buf.popleft()
                self.cond.notify_all()

    def stop(self):
        self._halt.set()
        with self.cond:
            self.cond.notify_all()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=2.0)
        if not self.is_alive():  # never release a device a blocked read is still using
            self.grabber.close()


# ------------------------------------------------------------------------- conversion
def to_views(item: Captured, split: bool, matrix: str, rng: str) -> list[Frame]:
    """A captured frame -> [I420 Frame] or, with ``split``, [left half, right half]."""
    if item.kind == "bgr":
        rgb = item.frame[:, :, ::-1]
        if not split:
            return [colour.rgb_to_i420(rgb, matrix, rng)]
        half = rgb.shape[1] // 2
        return [colour.rgb_to_i420(rgb[:, :half], matrix, rng),
                colour.rgb_to_i420(rgb[:, half:2 * half], matrix, rng)]
    frame: Frame = item.frame
    if not split:
        return [frame]
    half = frame.width // 2
    if half % 2 == 0:  # chroma columns split cleanly: exact
        y, u, v = frame.planes
        hc = half // 2
        return [Frame.yuv420(y[:, :half], u[:, :hc], v[:, :hc]),
                Frame.yuv420(y[:, half:2 * half], u[:, hc:2 * hc], v[:, hc:2 * hc])]
    rgb = colour.i420_to_rgb(frame, matrix, rng)
    return [colour.rgb_to_i420(np.ascontiguousarray(rgb[:, :half]), matrix, rng),
            colour.rgb_to_i420(np.ascontiguousarray(rgb[:, half:2 * half]), matrix, rng)]


def start_capture(device, backend, width, height, fps, mjpeg, mode, maxlen_live=1,
                  maxlen_offline=8):
    """Open a device (or stand-in file), start its capture thread and wait for the first frame.
    Returns the running CaptureThread; SourceError if the device cannot deliver."""
    label = device_label(normalise_device(device))
    grabber = open_grabber(device, backend, width, height, fps, mjpeg)
    drop = grabber.live
    maxlen = maxlen_live if (grabber.live and mode == "live") else maxlen_offline
    th = CaptureThread(grabber, label, maxlen=maxlen, drop=drop)
    th.start()
    try:
        first = th.peek(timeout=OPEN_TIMEOUT_S)
    except SourceError as e:
        th.stop()
        msg = str(e)
        raise SourceError(msg if msg.startswith(label) else f"{label}: {msg}") from e
    if first is None:
        th.stop()
        raise SourceError(f"{label}: cannot open: it delivered no frame")
    # the actual size is the first frame's (some drivers report a size they do not deliver)
    if first.kind == "bgr":
        grabber.height, grabber.width = first.frame.shape[:2]
    else:
        grabber.width, grabber.height = first.frame.width, first.frame.height
    return th


class CameraSource(Source):
    """One camera (index or /dev path) -> one live yuv420p stream."""

    live = True

    @dataclass
    class Config:
        device: int | str = schema.option(0, "camera index (0) or path (/dev/video0)")
        width: int | None = schema.number(None, min=1, help="requested width (device decides)")
        height: int | None = schema.number(None, min=1, help="requested height")
        fps: float | None = schema.number(None, min=0.001, help="requested frame rate")
        mjpeg: bool = schema.option(False, "request the MJPEG fourcc (higher USB frame rates)")
        backend: str = schema.choice("opencv", BACKENDS, help="capture library")
        frames: int | None = schema.number(None, min=1, help="stop after this many frames")
        matrix: str = schema.choice("bt709", MATRIX_CHOICES, help="RGB->YUV matrix")
        range: str = schema.choice("limited", RANGE_CHOICES, help="YUV code range")
        name: str | None = schema.option(None, "stream name (default: camera<N>, or the device's name)")

    def __init__(self, config, mode: str = "offline"):
        super().__init__(config, mode)
        c = config
        self.device = normalise_device(c.device)
        self.label = device_label(self.device)
        self.capture = start_capture(self.device, c.backend, c.width, c.height, c.fps, c.mjpeg,
                                     mode)
        self.live = self.capture.grabber.live
        g = self.capture.grabber
        self.info = StreamInfo(width=g.width, height=g.height, pix_fmt="yuv420p", views=1,
                               fps=float(g.fps), matrix=c.matrix, range=c.range)
        if c.name:
            self.name = c.name
        elif isinstance(self.device, int):
            self.name = f"camera{self.device}"
        else:
            self.name = os.path.splitext(os.path.basename(str(self.device)))[0] or "camera"

    def _frames(self, meta: dict):
        c = self.config
        n, t0 = 0, None
        while c.frames is None or n < c.frames:
            item = self.capture.get()
            if item is None:
                return
            if t0 is None:
                t0 = item.ts
            pictures = to_views(item, False, c.matrix, c.range)
            if pictures[0].width != self.info.width or pictures[0].height != self.info.height:
                raise SourceError(f"{self.label}: frame size changed to {pictures[0].width}x"
                                  f"{pictures[0].height} (stream is {self.info.width}x"
                                  f"{self.info.height})")
            meta["index"] = n
            meta["capture_ts"] = item.ts
            meta["pts"] = item.ts - t0
            meta["dropped"] = self.capture.dropped
            n += 1
            yield pictures

    def streams(self):
        meta = {"device": str(self.device), "capture_ts": None, "dropped": 0}
        yield SourceStream(self.name, self.info, self._frames(meta), total=self.config.frames,
                           meta=meta)

    def close(self) -> None:
        self.capture.stop()

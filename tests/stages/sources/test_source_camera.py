"""camera source: a missing device fails fast at construction; a video file stands in for a
camera (there is no camera on CI machines)."""

import time

import numpy as np
import pytest

from codecflow.data import Frame
from codecflow.errors import ConfigError, SourceError
from codecflow.pipeline import schema
from codecflow.pipeline.sources import source_class
from codecflow.stages.sources.camera import CameraSource
from codecflow.stages.sources.video import write_video_file


def make(cfg, mode="live"):
    return CameraSource(schema.parse(CameraSource.Config, cfg, "source"), mode)


def test_registry_and_live():
    assert source_class("camera") is CameraSource
    assert CameraSource.live is True


@pytest.mark.parametrize("device, label", [("/dev/video99", "camera /dev/video99"),
                                           (99, "camera 99"), ("99", "camera 99")])
@pytest.mark.parametrize("backend", ["opencv", "pyav"])
def test_missing_device_fails_fast(device, label, backend):
    t = time.monotonic()
    with pytest.raises(SourceError) as e:
        make({"device": device, "backend": backend})
    assert str(e.value).startswith(label + ": cannot open")
    assert time.monotonic() - t < 2.0


def test_config_checks():
    with pytest.raises(ConfigError, match="source.backend"):
        make({"backend": "gstreamer"})
    with pytest.raises(ConfigError, match="source.mjpeg"):
        make({"mjpeg": "yes"})


def _frames(n, w, h):
    out = []
    for i in range(n):
        y = np.full((h, w), 16 + 20 * i, np.uint8)
        c = np.full(((h + 1) // 2, (w + 1) // 2), 128, np.uint8)
        out.append(Frame.yuv420(y, c, c))
    return out


def test_video_file_stands_in_for_a_camera(tmp_path):
    frames = _frames(5, 32, 16)
    p = tmp_path / "fake_cam.mkv"
    write_video_file(str(p), frames, fps=20)
    src = make({"device": str(p), "frames": 4})
    assert src.live is False  # a file is read losslessly
    (st,) = list(src.streams())
    assert st.name == "fake_cam" and st.total == 4
    assert (st.info.width, st.info.height, st.info.fps) == (32, 16, 20.0)
    got = []
    for views in st.frames:
        got.append(views[0])
        assert st.meta["capture_ts"] == pytest.approx((len(got) - 1) / 20)  # the file's pts
    assert len(got) == 4
    assert all(np.array_equal(g.planes[0], f.planes[0]) for g, f in zip(got, frames))
    assert st.meta["pts"] == pytest.approx(3 / 20)
    src.close()


class FakeCamera:
    """Stands in for an OpenCV camera: BGR frames whose pixels encode their index."""

    live = True

    def __init__(self, w=16, h=8, fps=200.0, offset=0.0, n=None):
        self.width, self.height, self.fps = w, h, fps
        self.offset, self.n, self.i = offset, n, 0
        self.t0 = time.monotonic()
        self.closed = False

    def grab(self):
        if self.n is not None and self.i >= self.n:
            return None
        due = self.t0 + self.i / self.fps
        time.sleep(max(0.0, due - time.monotonic()))
        img = np.zeros((self.height, self.width, 3), np.uint8)
        img[..., 0] = (10 * self.i) % 256  # blue
        img[..., 2] = 200  # red
        self.i += 1
        return "bgr", img, due + self.offset

    def close(self):
        self.closed = True


def test_live_camera_bgr_path(monkeypatch):
    from codecflow.codecs import colour
    from codecflow.stages.sources import camera

    fake = FakeCamera(fps=50.0)  # 25 distinct frames = 0.5 s of slack for a slow test machine
    monkeypatch.setattr(camera, "open_grabber", lambda *a, **k: fake)
    src = make({"device": 0, "frames": 5, "matrix": "bt601"})
    assert src.live is True
    (st,) = list(src.streams())
    assert (st.info.width, st.info.height, st.info.fps) == (16, 8, 50.0)
    assert st.name == "camera0" and st.info.matrix == "bt601"
    expected = {}  # crc of the I420 frame the camera's frame i must become -> i
    for i in range(25):
        rgb = np.zeros((8, 16, 3), np.uint8)
        rgb[..., 0], rgb[..., 2] = 200, 10 * i
        expected[colour.rgb_to_i420(rgb, "bt601", "limited").crc32()] = i
    last_ts, last_i = -1.0, -1
    for (f,) in st.frames:
        assert f.fmt == "yuv420p" and f.planes[0].shape == (8, 16)
        i = expected[f.crc32()]  # converted BGR -> RGB -> I420 with the stream's matrix
        assert i > last_i and st.meta["capture_ts"] > last_ts
        last_i, last_ts = i, st.meta["capture_ts"]
    assert st.meta["index"] == 4
    src.close()
    assert fake.closed


def test_capture_thread_keeps_only_the_newest_frame_live():
    from codecflow.stages.sources.camera import CaptureThread

    th = CaptureThread(FakeCamera(fps=1000.0, n=50), "camera 0", maxlen=1, drop=True)
    th.start()
    time.sleep(0.2)  # the consumer is slow: the thread overwrites old frames
    item = th.get()
    assert item.index == 49 and th.dropped == 49
    assert th.get() is None  # end of input
    th.stop()

"""stereo_rig: timestamp pairing (video files stand in for cameras), side-by-side split,
errors."""

import numpy as np
import pytest

from codecflow.data import Frame, chroma_size
from codecflow.errors import ConfigError, SourceError
from codecflow.pipeline import schema
from codecflow.pipeline.sources import source_class
from codecflow.stages.sources.stereo_rig import StereoRigSource
from codecflow.stages.sources.video import write_video_file


def make(cfg, mode="offline"):
    return StereoRigSource(schema.parse(StereoRigSource.Config, cfg, "source"), mode)


def rand_frames(n, w, h, seed=0):
    rng = np.random.default_rng(seed)
    cw, ch = chroma_size(w, h)
    return [Frame.yuv420(rng.integers(0, 256, (h, w), np.uint8),
                         rng.integers(0, 256, (ch, cw), np.uint8),
                         rng.integers(0, 256, (ch, cw), np.uint8)) for _ in range(n)]


def same(a: Frame, b: Frame):
    return all(np.array_equal(x, y) for x, y in zip(a.planes, b.planes))


def test_registry():
    assert source_class("stereo_rig") is StereoRigSource


def test_two_files_pair_frame_by_frame(tmp_path):
    lf, rf = rand_frames(6, 32, 16, 1), rand_frames(6, 32, 16, 2)
    write_video_file(str(tmp_path / "l.mkv"), lf, fps=10)
    write_video_file(str(tmp_path / "r.mkv"), rf, fps=10)
    src = make({"left": str(tmp_path / "l.mkv"), "right": str(tmp_path / "r.mkv")})
    assert src.live is False
    (st,) = list(src.streams())
    assert (st.info.width, st.info.height, st.info.views, st.info.fps) == (32, 16, 2, 10.0)
    pairs = list(st.frames)
    assert len(pairs) == 6
    for (l, r), el, er in zip(pairs, lf, rf):
        assert same(l, el) and same(r, er)
    assert st.meta["dropped"] == 0 and st.meta["skew_ms"] == 0
    assert st.meta["pts"] == pytest.approx(0.5)
    src.close()


def test_unmatched_frames_are_dropped_and_counted(tmp_path):
    lf, rf = rand_frames(8, 16, 16, 1), rand_frames(8, 16, 16, 2)
    write_video_file(str(tmp_path / "l.mkv"), lf, fps=10)
    # right camera missed instant 3 and its clock runs 10 ms late from instant 5 on
    rpts = [0, 1, 2, 4, 5, 6, 7]
    write_video_file(str(tmp_path / "r.mkv"), rf[:7], fps=100,
                     pts=[10 * p + (1 if p >= 5 else 0) for p in rpts])
    src = make({"left": str(tmp_path / "l.mkv"), "right": str(tmp_path / "r.mkv"),
                "max_skew_ms": 15})
    (st,) = src.streams()
    pairs = list(st.frames)
    assert len(pairs) == 7
    for (l, r), li, ri in zip(pairs, [0, 1, 2, 4, 5, 6, 7], range(7)):
        assert same(l, lf[li]) and same(r, rf[ri])
    assert st.meta["unpaired"] == {"left": 1, "right": 0} and st.meta["dropped"] == 1
    assert st.meta["skew_ms"] == pytest.approx(-10.0)
    src.close()
    # with a tight skew the late right frames no longer match anything
    src = make({"left": str(tmp_path / "l.mkv"), "right": str(tmp_path / "r.mkv"),
                "max_skew_ms": 5})
    (st,) = src.streams()
    assert len(list(st.frames)) == 4
    # left 3, 5, 6, 7 and right 5, 6 found no partner (right 7 was left over at the end)
    assert st.meta["unpaired"] == {"left": 4, "right": 2}
    src.close()


def test_frames_limit(tmp_path):
    lf = rand_frames(5, 16, 16)
    write_video_file(str(tmp_path / "l.mkv"), lf, fps=10)
    write_video_file(str(tmp_path / "r.mkv"), lf, fps=10)
    (st,) = make({"left": str(tmp_path / "l.mkv"), "right": str(tmp_path / "r.mkv"),
                  "frames": 2}).streams()
    assert st.total == 2 and len(list(st.frames)) == 2


def test_side_by_side_split(tmp_path):
    frames = rand_frames(3, 64, 16)
    write_video_file(str(tmp_path / "sbs.mkv"), frames, fps=30)
    src = make({"layout": "side_by_side", "device": str(tmp_path / "sbs.mkv")})
    (st,) = src.streams()
    assert (st.info.width, st.info.height, st.info.views) == (32, 16, 2)
    got = list(st.frames)
    assert len(got) == 3
    for (l, r), f in zip(got, frames):
        y, u, v = f.planes
        assert same(l, Frame.yuv420(y[:, :32], u[:, :16], v[:, :16]))
        assert same(r, Frame.yuv420(y[:, 32:], u[:, 16:], v[:, 16:]))
    src.close()


def test_side_by_side_ignores_the_pair_keys_of_a_config(tmp_path, caplog):
    """configs/stereo_cam.yaml names left/right; `--set source.layout=side_by_side --set
    source.device=...` (the README example) must work, saying what it ignores."""
    write_video_file(str(tmp_path / "sbs.mkv"), rand_frames(2, 64, 16), fps=30)
    src = make({"layout": "side_by_side", "device": str(tmp_path / "sbs.mkv"), "left": 0,
                "right": 1})
    (st,) = src.streams()
    assert st.info.views == 2 and len(list(st.frames)) == 2
    assert "'left' (0) and 'right' (1) are for layout 'pair' and are ignored" in caplog.text
    src.close()


def test_side_by_side_odd_half_width(tmp_path):
    write_video_file(str(tmp_path / "sbs.mkv"), rand_frames(2, 34, 16), fps=30)
    (st,) = make({"layout": "side_by_side", "device": str(tmp_path / "sbs.mkv")}).streams()
    l, r = next(iter(st.frames))
    assert [p.shape for p in l.planes] == [(16, 17), (8, 9), (8, 9)]
    assert [p.shape for p in r.planes] == [(16, 17), (8, 9), (8, 9)]


def test_side_by_side_odd_width_is_an_error(tmp_path):
    write_video_file(str(tmp_path / "odd.mkv"), rand_frames(2, 33, 16), fps=30)
    with pytest.raises(SourceError, match="odd width"):
        make({"layout": "side_by_side", "device": str(tmp_path / "odd.mkv")})


def test_errors(tmp_path):
    with pytest.raises(SourceError, match="camera /dev/video98: cannot open"):
        make({"left": "/dev/video98", "right": "/dev/video99"}, "live")
    with pytest.raises(SourceError, match="camera 97: cannot open"):
        make({"layout": "side_by_side", "device": 97}, "live")
    with pytest.raises(ConfigError, match="right"):
        make({"left": 0})
    with pytest.raises(ConfigError, match="device"):
        make({"layout": "side_by_side"})
    with pytest.raises(ConfigError, match="same device"):
        make({"left": 0, "right": "0"})
    a, b = tmp_path / "a.mkv", tmp_path / "b.mkv"
    write_video_file(str(a), rand_frames(1, 16, 16), fps=10)
    write_video_file(str(b), rand_frames(1, 32, 16), fps=10)
    with pytest.raises(SourceError, match="same size"):
        make({"left": str(a), "right": str(b)})
    with pytest.raises(ConfigError, match="both be cameras or both be video files"):
        make({"left": str(a), "right": 5})


class FakeCamera:
    """A live BGR camera: frame i is captured at t0 + i / fps + offset; its pixels encode i."""

    live = True

    def __init__(self, fps=100.0, offset=0.0, n=40, w=16, h=8, skip=()):
        import time

        self.time = time
        self.width, self.height, self.fps = w, h, fps
        self.offset, self.n, self.i, self.skip = offset, n, 0, set(skip)
        self.t0 = time.monotonic()

    def grab(self):
        while self.i in self.skip:  # frames this camera failed to deliver
            self.i += 1
        if self.i >= self.n:
            return None
        due = self.t0 + self.i / self.fps
        self.time.sleep(max(0.0, due - self.time.monotonic()))
        img = np.zeros((self.height, self.width, 3), np.uint8)
        img[..., 1] = 5 * self.i
        self.i += 1
        return "bgr", img, due + self.offset

    def close(self):
        pass


def test_live_cameras_pair_by_timestamp(monkeypatch):
    from codecflow.stages.sources import stereo_rig
    from codecflow.stages.sources.camera import CaptureThread

    cams = {0: FakeCamera(offset=0.0), 1: FakeCamera(offset=0.0015, skip={7, 8})}

    def fake_start(dev, *a, **k):
        th = CaptureThread(cams[dev], f"camera {dev}", maxlen=8, drop=True)
        th.start()
        return th

    monkeypatch.setattr(stereo_rig, "start_capture", fake_start)
    src = make({"left": 0, "right": 1, "max_skew_ms": 2}, "live")
    assert src.live is True
    (st,) = src.streams()
    assert (st.info.width, st.info.height, st.info.views) == (16, 8, 2)
    n = 0
    for l, r in st.frames:
        # the same instant on both sides (green encodes the index; Y follows it)
        assert np.array_equal(l.planes[0], r.planes[0])
        assert abs(st.meta["skew_ms"]) <= 2.0
        n += 1
    if sum(st.meta["overwritten"].values()) == 0:  # the consumer kept up (it normally does)
        assert n == 38
        assert st.meta["unpaired"] == {"left": 2, "right": 0}
    else:
        assert n >= 20
    src.close()

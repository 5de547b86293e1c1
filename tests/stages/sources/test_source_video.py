"""video source: bit-exact FFV1, pixel-format conversion, folders, limits, errors."""

import os

import numpy as np
import pytest

from codecflow.data import Frame, chroma_size
from codecflow.errors import SourceError
from codecflow.pipeline import schema
from codecflow.pipeline.sources import source_class
from codecflow.stages.sources.video import VideoFileSource, write_video_file

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "data")


def make(cfg, mode="offline"):
    return VideoFileSource(schema.parse(VideoFileSource.Config, cfg, "source"), mode)


def rand_frames(n, w, h, seed=0):
    rng = np.random.default_rng(seed)
    cw, ch = chroma_size(w, h)
    return [Frame.yuv420(rng.integers(0, 256, (h, w), np.uint8),
                         rng.integers(0, 256, (ch, cw), np.uint8),
                         rng.integers(0, 256, (ch, cw), np.uint8)) for _ in range(n)]


def same(a: Frame, b: Frame):
    return a.fmt == b.fmt and all(np.array_equal(x, y) for x, y in zip(a.planes, b.planes))


def test_registry_points_here():
    assert source_class("video") is VideoFileSource


@pytest.mark.parametrize("w, h", [(64, 48), (33, 17)])
def test_ffv1_bit_exact(tmp_path, w, h):
    frames = rand_frames(6, w, h)
    p = tmp_path / "clip.mkv"
    write_video_file(str(p), frames, fps=25)
    src = make({"path": str(p)})
    (st,) = list(src.streams())
    assert st.name == "clip"
    assert (st.info.width, st.info.height, st.info.fps, st.info.views) == (w, h, 25.0, 1)
    assert st.info.pix_fmt == "yuv420p"
    got = list(st.frames)
    assert len(got) == 6
    assert all(same(g[0], f) for g, f in zip(got, frames))
    assert st.meta["pts"] == pytest.approx(5 / 25)
    src.close()


def test_other_pix_fmt_is_converted(tmp_path):
    frames = rand_frames(2, 32, 16)
    p = tmp_path / "c444.mkv"
    write_video_file(str(p), frames, fps=10, pix_fmt="yuv444p")
    (st,) = make({"path": str(p), "fps": 5}).streams()
    assert st.info.fps == 5.0 and st.meta["file_pix_fmt"] == "yuv444p"
    got = [g[0] for g in st.frames]
    assert [p.shape for p in got[0].planes] == [(16, 32), (8, 16), (8, 16)]
    assert np.array_equal(got[0].planes[0], frames[0].planes[0])  # luma untouched


def test_lossy_mpeg4_avi(tmp_path):
    frames = rand_frames(4, 32, 32)
    p = tmp_path / "m.avi"
    write_video_file(str(p), frames, fps=30, codec="mpeg4")
    (st,) = make({"path": str(p)}).streams()
    got = list(st.frames)
    assert len(got) == 4 and got[0][0].planes[0].shape == (32, 32)


def test_folder_frames_start(tmp_path):
    a, b = rand_frames(5, 16, 16, 1), rand_frames(3, 32, 16, 2)
    write_video_file(str(tmp_path / "b.mkv"), a, fps=30)
    write_video_file(str(tmp_path / "a.mkv"), b, fps=30)
    (tmp_path / "readme.txt").write_text("x")
    streams = list(make({"path": str(tmp_path), "start": 1, "frames": 2}).streams())
    assert [s.name for s in streams] == ["a", "b"]
    ga, gb = [list(s.frames) for s in streams]
    assert len(ga) == 2 and all(same(g[0], f) for g, f in zip(ga, b[1:3]))
    assert len(gb) == 2 and all(same(g[0], f) for g, f in zip(gb, a[1:3]))


def test_errors_name_the_file(tmp_path):
    with pytest.raises(SourceError, match="nope.mkv"):
        make({"path": str(tmp_path / "nope.mkv")})
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(b"this is not a video" * 50)
    with pytest.raises(SourceError, match="bad.mkv"):
        make({"path": str(bad)})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no video files"):
        make({"path": str(empty)})


def test_real_sam2_cups():
    p = os.path.join(DATA, "video", "sam2_cups_1280x720_30.mkv")
    if not os.path.exists(p):
        pytest.skip("../shared/data is absent (real data test)")
    (st,) = make({"path": p}).streams()
    assert (st.info.width, st.info.height, st.info.fps) == (1280, 720, 30.0)
    assert st.meta["frames_estimate"] == 32
    n = 0
    for (f,) in st.frames:
        assert f.planes[0].shape == (720, 1280) and f.planes[1].shape == (360, 640)
        n += 1
    assert n == 32

"""yuv source: name parsing, exact planes, size checks before any read, folders, limits."""

import io
import os

import numpy as np
import pytest

from codecflow.data import Frame, chroma_size
from codecflow.errors import ConfigError, SourceError
from codecflow.pipeline import schema
from codecflow.stages.sources import yuv as yuv_mod
from codecflow.pipeline.sources import source_class
from codecflow.media import i420_frame_size, parse_yuv_name, write_i420
from codecflow.stages.sources.yuv import YuvSource

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "data")


def make(cfg, mode="offline"):
    return YuvSource(schema.parse(YuvSource.Config, cfg, "source"), mode)


def rand_frames(n, w, h, seed=0):
    rng = np.random.default_rng(seed)
    cw, ch = chroma_size(w, h)
    return [Frame.yuv420(rng.integers(0, 256, (h, w), np.uint8),
                         rng.integers(0, 256, (ch, cw), np.uint8),
                         rng.integers(0, 256, (ch, cw), np.uint8)) for _ in range(n)]


def write(path, frames):
    with open(path, "wb") as f:
        for fr in frames:
            write_i420(f, fr)


def same(a: Frame, b: Frame):
    return a.fmt == b.fmt and all(np.array_equal(x, y) for x, y in zip(a.planes, b.planes))


def test_registry_points_here():
    assert source_class("yuv") is YuvSource


@pytest.mark.parametrize("name, want", [
    ("BasketballPass_416x240_50.yuv", (416, 240, 50.0)),
    ("/x/y/carphone_176x144_30.yuv", (176, 144, 30.0)),
    ("clip_1920x1080.yuv", (1920, 1080, None)),
    ("clip_1920x1080_29.97.yuv", (1920, 1080, 29.97)),
    ("Kimono1_1920x1080_24_8bit_420.yuv", (1920, 1080, 24.0)),
    ("352x288.yuv", (352, 288, None)),
    ("foreman_cif.yuv", None),
    ("a1x2b.yuv", None),
])
def test_parse_yuv_name(name, want):
    assert parse_yuv_name(name) == want


def test_reads_exact_planes_odd_size(tmp_path):
    frames = rand_frames(5, 33, 17)
    p = tmp_path / "odd_33x17_25.yuv"
    write(p, frames)
    assert p.stat().st_size == 5 * i420_frame_size(33, 17) == 5 * (33 * 17 + 2 * 17 * 9)
    src = make({"path": str(p)})
    (st,) = list(src.streams())
    assert st.name == "odd_33x17_25"
    assert (st.info.width, st.info.height, st.info.fps, st.info.views) == (33, 17, 25.0, 1)
    assert (st.info.pix_fmt, st.info.matrix, st.info.range) == ("yuv420p", "bt709", "limited")
    assert st.total == 5
    got = list(st.frames)
    assert len(got) == 5 and all(len(g) == 1 for g in got)
    assert all(same(g[0], f) for g, f in zip(got, frames))
    assert [p.shape for p in got[0][0].planes] == [(17, 33), (9, 17), (9, 17)]
    assert st.meta["index"] == 4 and st.meta["pts"] == pytest.approx(4 / 25)
    src.close()


def test_wrong_size_fails_at_construction_before_any_read(tmp_path, monkeypatch):
    good, bad = tmp_path / "a_16x16_30.yuv", tmp_path / "b_16x16_30.yuv"
    write(good, rand_frames(2, 16, 16))
    bad.write_bytes(b"\0" * (3 * 384 + 100))

    def no_read(*a, **k):
        raise AssertionError("read before validation")

    monkeypatch.setattr(yuv_mod.np, "fromfile", no_read)
    with pytest.raises(SourceError) as e:
        make({"path": str(tmp_path)})
    msg = str(e.value)
    assert "b_16x16_30.yuv" in msg and str(3 * 384 + 100) in msg and "384" in msg
    assert "100" in msg and "3 whole frames" in msg


def test_folder_one_stream_per_file_sorted(tmp_path):
    fa, fb = rand_frames(3, 16, 8, 1), rand_frames(2, 32, 16, 2)
    write(tmp_path / "zeta_16x8_10.yuv", fa)
    write(tmp_path / "alpha_32x16.yuv", fb)
    (tmp_path / "notes.txt").write_text("ignored")
    src = make({"path": str(tmp_path), "fps": 12.5})
    streams = list(src.streams())
    assert [s.name for s in streams] == ["alpha_32x16", "zeta_16x8_10"]
    assert (streams[0].info.width, streams[0].info.height) == (32, 16)
    assert streams[0].info.fps == 12.5 and streams[1].info.fps == 12.5  # config overrides
    assert all(same(g[0], f) for g, f in zip(streams[0].frames, fb))
    assert all(same(g[0], f) for g, f in zip(streams[1].frames, fa))


def test_fps_from_name_else_default(tmp_path):
    write(tmp_path / "a_16x8.yuv", rand_frames(1, 16, 8))
    (st,) = make({"path": str(tmp_path / "a_16x8.yuv")}).streams()
    assert st.info.fps == 30.0


def test_frames_and_start(tmp_path):
    frames = rand_frames(10, 16, 16)
    p = tmp_path / "c_16x16_30.yuv"
    write(p, frames)
    (st,) = make({"path": str(p), "start": 3, "frames": 4}).streams()
    assert st.total == 4
    got = list(st.frames)
    assert len(got) == 4 and all(same(g[0], f) for g, f in zip(got, frames[3:7]))
    (st,) = make({"path": str(p), "start": 8, "frames": 4}).streams()
    assert st.total == 2 and len(list(st.frames)) == 2
    with pytest.raises(SourceError, match="start=10"):
        make({"path": str(p), "start": 10})


def test_config_size_overrides_name(tmp_path):
    frames = rand_frames(2, 8, 4)
    p = tmp_path / "clip_16x16_30.yuv"  # name lies; config is right
    write(p, frames)
    (st,) = make({"path": str(p), "width": 8, "height": 4, "matrix": "bt601",
                  "range": "full"}).streams()
    assert (st.info.width, st.info.height, st.info.fps) == (8, 4, 30.0)
    assert (st.info.matrix, st.info.range) == ("bt601", "full")
    assert all(same(g[0], f) for g, f in zip(st.frames, frames))


def test_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        make({"path": str(tmp_path / "missing_16x16.yuv")})
    with pytest.raises(SourceError, match="no .yuv files"):
        make({"path": str(tmp_path)})
    (tmp_path / "foreman_cif.yuv").write_bytes(b"\0" * 384)
    with pytest.raises(SourceError, match="foreman_cif.yuv.*width"):
        make({"path": str(tmp_path / "foreman_cif.yuv")})
    (tmp_path / "empty_16x16.yuv").write_bytes(b"")
    with pytest.raises(SourceError, match="empty"):
        make({"path": str(tmp_path / "empty_16x16.yuv")})
    with pytest.raises(ConfigError, match="source.matrix"):
        make({"path": "x", "matrix": "bt2020"})
    with pytest.raises(ConfigError, match="unknown key"):
        make({"path": "x", "colour": 1})


def test_write_i420_converts_rgb():
    rgb = np.full((4, 6, 3), 128, np.uint8)
    buf = io.BytesIO()
    n = write_i420(buf, Frame.rgb(rgb))
    assert n == len(buf.getvalue()) == i420_frame_size(6, 4)


def test_real_basketball():
    p = os.path.join(DATA, "video", "BasketballPass_416x240_50.yuv")
    if not os.path.exists(p):
        pytest.skip("../shared/data is absent (real data test)")
    (st,) = make({"path": p}).streams()
    assert (st.info.width, st.info.height, st.info.fps, st.total) == (416, 240, 50.0, 100)
    n = 0
    for (f,) in st.frames:
        assert f.planes[0].shape == (240, 416)
        n += 1
    assert n == 100

"""images / stereo_images sources: one stream per file (or pair), sizes, errors."""

import glob
import os

import cv2
import numpy as np
import pytest

from codecflow.errors import SourceError
from codecflow.pipeline import schema
from codecflow.pipeline.sources import source_class
from codecflow.stages.sources.images import (ImageFolderSource, StereoImageFolderSource,
                                             image_size)

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "data")


def make(cls, cfg, mode="offline"):
    return cls(schema.parse(cls.Config, cfg, "source"), mode)


def rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def save(path, img):
    assert cv2.imwrite(str(path), np.ascontiguousarray(img[:, :, ::-1]))


def test_registry():
    assert source_class("images") is ImageFolderSource
    assert source_class("stereo_images") is StereoImageFolderSource


def test_header_sizes(tmp_path):
    img = rgb(21, 35)
    for ext in ("png", "jpg", "bmp", "ppm", "webp"):
        save(tmp_path / f"a.{ext}", img)
        assert image_size(str(tmp_path / f"a.{ext}")) == (35, 21), ext


def test_folder_of_mixed_sizes(tmp_path):
    land, port, small = rgb(40, 60, 1), rgb(60, 40, 2), rgb(7, 9, 3)
    save(tmp_path / "b_portrait.png", port)
    save(tmp_path / "a_landscape.png", land)
    save(tmp_path / "c.jpg", small)
    (tmp_path / "notes.txt").write_text("ignored")
    src = make(ImageFolderSource, {"path": str(tmp_path), "frames": 5})
    streams = list(src.streams())
    assert [s.name for s in streams] == ["a_landscape", "b_portrait", "c"]
    assert [(s.info.width, s.info.height) for s in streams] == [(60, 40), (40, 60), (9, 7)]
    for s in streams:
        assert (s.info.pix_fmt, s.info.views, s.total) == ("rgb24", 1, 1)
        assert (s.info.matrix, s.info.range) == ("bt709", "full")
    got = [list(s.frames) for s in streams]
    assert all(len(g) == 1 and len(g[0]) == 1 for g in got)
    assert np.array_equal(got[0][0][0].planes[0], land)  # PNG is lossless, RGB order
    assert np.array_equal(got[1][0][0].planes[0], port)
    assert got[2][0][0].fmt == "rgb24" and got[2][0][0].planes[0].shape == (7, 9, 3)


def test_pattern_and_single_file(tmp_path):
    save(tmp_path / "kodim01.png", rgb(8, 8))
    save(tmp_path / "other.png", rgb(8, 8))
    streams = list(make(ImageFolderSource, {"path": str(tmp_path),
                                            "pattern": "kodim*"}).streams())
    assert [s.name for s in streams] == ["kodim01"]
    (s,) = make(ImageFolderSource, {"path": str(tmp_path / "other.png")}).streams()
    assert s.name == "other"


def test_grey_image_becomes_rgb(tmp_path):
    g = np.arange(48, dtype=np.uint8).reshape(6, 8)
    cv2.imwrite(str(tmp_path / "g.png"), g)
    (s,) = make(ImageFolderSource, {"path": str(tmp_path)}).streams()
    (f,) = next(iter(s.frames))
    assert f.planes[0].shape == (6, 8, 3) and np.array_equal(f.planes[0][..., 1], g)


def test_bad_images(tmp_path):
    save(tmp_path / "a.png", rgb(8, 8))
    (tmp_path / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(SourceError, match="broken.png"):
        make(ImageFolderSource, {"path": str(tmp_path)})  # found before anything is read
    os.remove(tmp_path / "broken.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[:60])  # good header, no pixels
    src = make(ImageFolderSource, {"path": str(tmp_path)})
    it = src.streams()
    next(it)
    with pytest.raises(SourceError, match="truncated.png"):
        next(it)
    with pytest.raises(SourceError, match="no such file"):
        make(ImageFolderSource, {"path": str(tmp_path / "missing")})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images"):
        make(ImageFolderSource, {"path": str(empty)})


def test_stereo_pairs(tmp_path):
    l1, r1, l2, r2 = rgb(10, 20, 1), rgb(10, 20, 2), rgb(12, 8, 3), rgb(12, 8, 4)
    save(tmp_path / "scene_L.png", l1)
    save(tmp_path / "scene_R.png", r1)
    save(tmp_path / "Art_L.png", l2)
    save(tmp_path / "Art_R.png", r2)
    src = make(StereoImageFolderSource, {"path": str(tmp_path)})
    streams = list(src.streams())
    assert [s.name for s in streams] == ["Art", "scene"]
    assert [(s.info.width, s.info.height, s.info.views) for s in streams] == \
        [(8, 12, 2), (20, 10, 2)]
    (pair,) = list(streams[1].frames)
    assert np.array_equal(pair[0].planes[0], l1) and np.array_equal(pair[1].planes[0], r1)
    (s,) = make(StereoImageFolderSource, {"path": str(tmp_path / "Art_L.png")}).streams()
    assert s.name == "Art"
    (s,) = make(StereoImageFolderSource, {"path": str(tmp_path),
                                          "pattern": "scene*"}).streams()
    assert s.name == "scene"


def test_stereo_errors(tmp_path):
    save(tmp_path / "ok_L.png", rgb(8, 8))
    save(tmp_path / "ok_R.png", rgb(8, 8))
    save(tmp_path / "lonely_L.png", rgb(8, 8))
    with pytest.raises(SourceError, match="lonely_L.png has no R partner"):
        make(StereoImageFolderSource, {"path": str(tmp_path)})
    save(tmp_path / "lonely_R.png", rgb(8, 9))
    with pytest.raises(SourceError, match="lonely_R.png is 9x8 but .*lonely_L.png is 8x8"):
        make(StereoImageFolderSource, {"path": str(tmp_path)})
    os.remove(tmp_path / "lonely_L.png")
    with pytest.raises(SourceError, match="lonely_R.png has no L partner"):
        make(StereoImageFolderSource, {"path": str(tmp_path)})


def test_real_kodak_and_stereo():
    kodak, stereo = os.path.join(DATA, "images", "kodak"), os.path.join(DATA, "stereo")
    if not os.path.isdir(kodak) or not os.path.isdir(stereo):
        pytest.skip("../shared/data is absent (real data test)")
    streams = list(make(ImageFolderSource, {"path": kodak}).streams())
    assert len(streams) == 24
    sizes = {(s.info.width, s.info.height) for s in streams}
    assert sizes == {(768, 512), (512, 768)}
    src = make(StereoImageFolderSource, {"path": stereo, "recursive": True})
    names = [e.name for e in src.entries]
    # the data folder grows: compare with what is on disk, never with a fixed count
    on_disk = glob.glob(os.path.join(stereo, "**", "*_L.*"), recursive=True)
    assert len(names) == len(on_disk) and "middlebury2014_Q_Adirondack" in names
    mb = make(StereoImageFolderSource, {"path": os.path.join(stereo, "middlebury2014_Q")})
    s = next(iter(mb.streams()))
    l, r = next(iter(s.frames))
    assert l.planes[0].shape == r.planes[0].shape == (s.info.height, s.info.width, 3)

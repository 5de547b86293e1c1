"""synthetic_video / synthetic_stereo: determinism, motion, speed, stereo geometry."""

import time

import cv2
import numpy as np
import pytest

from codecflow.errors import ConfigError
from codecflow.pipeline import schema
from codecflow.pipeline.sources import source_class
from codecflow.stages.sources.synthetic import (Scene, SyntheticStereoSource,
                                                SyntheticVideoSource, render_stereo_pair)


def make(cls, cfg, mode="offline"):
    return cls(schema.parse(cls.Config, cfg, "source"), mode)


def all_frames(src):
    (st,) = list(src.streams())
    return st, list(st.frames)


def test_registry_and_defaults():
    assert source_class("synthetic_video") is SyntheticVideoSource
    assert source_class("synthetic_stereo") is SyntheticStereoSource
    c = schema.parse(SyntheticVideoSource.Config, {}, "source")
    assert (c.width, c.height, c.fps, c.frames, c.seed, c.realtime) == (640, 360, 30.0, 300, 0,
                                                                       False)
    with pytest.raises(ConfigError, match="source.max_disparity"):
        schema.parse(SyntheticStereoSource.Config, {"max_disparity": 0}, "source")


def test_deterministic_and_moving():
    cfg = {"width": 96, "height": 64, "frames": 8, "seed": 3}
    st, a = all_frames(make(SyntheticVideoSource, cfg))
    _, b = all_frames(make(SyntheticVideoSource, cfg))
    _, c = all_frames(make(SyntheticVideoSource, dict(cfg, seed=4)))
    assert (st.info.width, st.info.height, st.info.views, st.info.pix_fmt) == (96, 64, 1,
                                                                              "yuv420p")
    assert st.total == 8 and len(a) == 8 and st.name == "synthetic"
    assert [f[0].crc32() for f in a] == [f[0].crc32() for f in b]
    assert a[0][0].crc32() != c[0][0].crc32()
    assert len({f[0].crc32() for f in a}) == 8  # every frame differs: the scene moves
    y0, y7 = (a[i][0].planes[0].astype(int) for i in (0, 7))
    assert np.abs(y7 - y0).mean() > 1.0


def test_looks_natural_not_noise():
    _, fr = all_frames(make(SyntheticVideoSource, {"width": 320, "height": 192, "frames": 1}))
    y = fr[0][0].planes[0].astype(int)
    grad = np.abs(np.diff(y, axis=1)).mean()
    assert 0.5 < grad < 12  # smooth areas with edges and texture (white noise: ~85)
    assert y.std() > 15  # not flat
    assert 16 <= y.min() and y.max() <= 235  # limited range


@pytest.mark.parametrize("w, h", [(33, 17), (2, 2)])
def test_odd_and_tiny_sizes(w, h):
    _, fr = all_frames(make(SyntheticStereoSource, {"width": w, "height": h, "frames": 2,
                                                    "max_disparity": 4}))
    for pair in fr:
        assert len(pair) == 2
        for f in pair:
            assert [p.shape for p in f.planes] == [(h, w), ((h + 1) // 2, (w + 1) // 2),
                                                   ((h + 1) // 2, (w + 1) // 2)]


def test_fast_enough():
    src = make(SyntheticVideoSource, {"width": 320, "height": 192, "frames": 200})
    (st,) = list(src.streams())
    t = time.perf_counter()
    n = sum(1 for _ in st.frames)
    fps = n / (time.perf_counter() - t)
    assert n == 200 and fps > 200, fps


def test_realtime_paces_and_live_skips():
    src = make(SyntheticVideoSource, {"width": 32, "height": 32, "frames": 6, "fps": 100,
                                      "realtime": True})
    assert src.live is True
    (st,) = list(src.streams())
    t = time.perf_counter()
    assert len(list(st.frames)) == 6
    assert time.perf_counter() - t >= 0.045
    src = make(SyntheticVideoSource, {"width": 32, "height": 32, "frames": 50, "fps": 100,
                                      "realtime": True}, mode="live")
    (st,) = list(src.streams())
    it = iter(st.frames)
    next(it)
    time.sleep(0.1)
    next(it)
    assert st.meta["index"] >= 5 and st.meta["dropped"] >= 4


def test_background_only_stereo_is_an_exact_shift():
    sc = Scene(64, 40, seed=1, objects=0, max_disparity=20, space="rgb")
    left, disp = sc.render(0.5, 0, with_disparity=True)
    right = sc.render(0.5, 1)
    d = sc.bg_disparity
    assert d >= 1 and np.all(disp == d)
    # left(x) == right(x - d)
    assert np.array_equal(left[:, :, d:], right[:, :, :64 - d])


def test_stereo_disparity_with_occlusions():
    sc = Scene(160, 96, seed=7, objects=4, max_disparity=16, space="rgb")
    for t in (0.0, 1.3):
        left, dl = sc.render(t, 0, with_disparity=True)
        right, dr = sc.render(t, 1, with_disparity=True)
        assert len(np.unique(dl)) >= 3 and dl.max() <= 16
        k = np.ones((5, 5), np.uint8)  # away from anti-aliased layer edges
        flat_l = cv2.erode(dl, k) == cv2.dilate(dl, k)
        flat_r = cv2.erode(dr, k) == cv2.dilate(dr, k)
        ys, xs = np.nonzero(flat_l)
        d = dl[ys, xs].astype(int)
        xr = xs - d
        ok = xr >= 0
        ys, xs, d, xr = ys[ok], xs[ok], d[ok], xr[ok]
        # the same surface is visible at x - d in the right view (else: occluded there)
        vis = (dr[ys, xr] == d) & flat_r[ys, xr]
        assert vis.mean() > 0.7
        assert (~vis).sum() > 0  # some occlusion happens
        ys, xs, xr = ys[vis], xs[vis], xr[vis]
        assert np.array_equal(left[:, ys, xs], right[:, ys, xr])


def test_render_stereo_pair_and_source():
    l, r, d = render_stereo_pair(96, 64, seed=2, max_disparity=12)
    assert l.shape == r.shape == (64, 96, 3) and l.dtype == r.dtype == np.uint8
    assert d.shape == (64, 96) and d.dtype == np.float32 and 0 < d.max() <= 12
    l2, r2, d2 = render_stereo_pair(96, 64, seed=2, max_disparity=12)
    assert np.array_equal(l, l2) and np.array_equal(r, r2) and np.array_equal(d, d2)
    st, fr = all_frames(make(SyntheticStereoSource, {"width": 96, "height": 64, "frames": 3,
                                                     "seed": 2, "max_disparity": 12}))
    assert (st.info.views, st.total, st.name) == (2, 3, "synthetic_stereo")
    lf, rf = fr[0]
    assert lf.crc32() != rf.crc32()
    bg = np.full((64, 96, 3), 90, np.uint8)  # a photo as the far layer
    l3, _, _ = render_stereo_pair(96, 64, seed=2, max_disparity=12, objects=0, background=bg)
    assert np.all(l3 == 90)

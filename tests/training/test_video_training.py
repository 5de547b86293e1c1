"""learned-video training: clips split by name, synthetic pans, cached examples, a few steps,
export, and a codec built from the exported weights."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codecflow.training import video as train_video  # noqa: E402
from codecflow.training.video_data import read_clip, split_clips, synthesise_motion  # noqa: E402
from tests.conftest import synth_rgb, write_yuv  # noqa: E402


def test_synthetic_pan_moves_the_picture():
    prev, cur = synthesise_motion(synth_rgb(400, 300, seed=1), np.random.default_rng(2), 128)
    assert prev.shape == cur.shape and prev.dtype == np.uint8
    assert np.abs(prev.astype(int) - cur.astype(int)).mean() > 1


def test_clips_split_and_read(tmp_path):
    for name in ("a", "b", "c", "d", "e", "f"):
        write_yuv(tmp_path / f"{name}_64x48_25.yuv", 64, 48, 3, seed=1)
    train, val = split_clips(tmp_path)
    assert len(train) + len(val) == 6
    frames = read_clip(train[0], 2, max_side=32)
    assert len(frames) == 2 and frames[0].shape == (24, 32, 3)


def test_train_export_and_code(tmp_path):
    from codecflow.codecs.learned.model import build_model
    from codecflow.codecs.learned.weights import save_weights

    torch.manual_seed(0)
    wdir = tmp_path / "weights"
    wdir.mkdir()
    save_weights(build_model({"N": 16, "M": 24}).eval(), wdir / "learned_intra.pt",
                 {"data": ["random (tests)"]})
    clips, photos = tmp_path / "clips", tmp_path / "photos"
    clips.mkdir()
    photos.mkdir()
    for name in ("a", "b", "c"):
        write_yuv(clips / f"{name}_96x64_25.yuv", 96, 64, 4, seed=2)
    cv2.imwrite(str(photos / "p.png"), synth_rgb(200, 160, seed=3))
    run = tmp_path / "run"
    common = ["--run-dir", str(run), "--video", str(clips), "--photos", str(photos),
              "--synth", "1", "--qs", "10,50", "--intra-weights", str(wdir / "learned_intra.pt"),
              "--crop", "4", "--batch", "2", "--F", "8", "--val-every", "0", "--threads", "1"]
    assert train_video.main(common + ["--steps", "3"]) == 0
    assert train_video.main(["--run-dir", str(run), "--export",
                             str(wdir / "learned_video.pt")]) == 0
    entry = json.loads((wdir / "manifest.json").read_text())["learned-video"]
    assert entry["training"]["steps"] == 3

    from codecflow.codecs import colour
    from codecflow.codecs.decoding import decode_checked
    from codecflow.codecs.registry import create_codec
    from codecflow.data import StreamInfo, Unit

    codec = create_codec("learned-video", q=20, weights=str(wdir / "learned_video.pt"),
                         intra_weights=str(wdir / "learned_intra.pt"))
    info = StreamInfo(width=80, height=48, pix_fmt="yuv420p", unit_kind="gop", gop=3)
    frames = [colour.rgb_to_i420(synth_rgb(80, 48, seed=4, shift=2 * i)) for i in range(3)]
    coded = codec.encode(Unit("gop", 0, "s", frames, info))
    got = decode_checked(codec, coded.records, info, "gop")
    assert all(np.array_equal(a.planes[0], b.planes[0]) for a, b in zip(got, coded.recon))
    shutil.rmtree(run)

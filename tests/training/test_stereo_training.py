"""learned-stereo training: synthetic pairs, the split, cached latent examples, a few steps
through the shared loop, resume, export, and a codec built from the exported weights."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codecflow.training import stereo as train_stereo  # noqa: E402
from codecflow.training.stereo_data import (  # noqa: E402
    find_pairs, is_validation, split_pairs, synthesise_pair)
from tests.conftest import synth_rgb  # noqa: E402


def test_synthesised_pair_is_a_horizontal_shift():
    rgb = synth_rgb(160, 96, seed=3)
    left, right = synthesise_pair(rgb, np.random.default_rng(1), max_side=160)
    assert left.shape == right.shape and left.dtype == right.dtype == np.uint8
    # the right view matches the left shifted to the left by a positive disparity more
    # closely than unshifted
    def err(d):
        return np.mean(np.abs(right[:, :80].astype(float) - left[:, d:80 + d].astype(float)))
    assert min(err(d) for d in range(1, 40)) < err(0)


def test_pairs_are_found_and_split_by_name(tmp_path):
    for name in ("a", "b", "c"):
        for side in "LR":
            cv2.imwrite(str(tmp_path / f"{name}_{side}.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "lonely_L.png"), np.zeros((8, 8, 3), np.uint8))
    pairs = find_pairs(tmp_path)
    assert [p[0] for p in pairs] == ["a", "b", "c"]
    train, val = split_pairs(tmp_path)
    assert sorted(p[0] for p in train + val) == ["a", "b", "c"]
    assert all(is_validation(p[0]) for p in val) and not any(is_validation(p[0]) for p in train)


@pytest.fixture(scope="module")
def intra_weights(tmp_path_factory):
    from codecflow.codecs.learned.model import build_model
    from codecflow.codecs.learned.weights import save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "learned_intra.pt"
    save_weights(build_model({"N": 16, "M": 24}).eval(), path, {"data": ["random (tests)"]})
    return path


def test_train_resume_export_and_code(tmp_path, intra_weights, capsys):
    photos, stereo = tmp_path / "photos", tmp_path / "stereo"
    photos.mkdir()
    stereo.mkdir()
    for i in range(3):
        cv2.imwrite(str(photos / f"p{i}.png"), synth_rgb(128, 128, seed=i))
    names = ["pairA", "pairB", "pairC", "pairD", "pairE", "pairF"]
    for i, name in enumerate(names):
        left = synth_rgb(128, 96, seed=10 + i)
        cv2.imwrite(str(stereo / f"{name}_L.png"), left)
        cv2.imwrite(str(stereo / f"{name}_R.png"), np.roll(left, -5, axis=1))
    run = tmp_path / "run"
    common = ["--run-dir", str(run), "--stereo", str(stereo), "--photos", str(photos),
              "--synth", "3", "--qs", "0,63", "--intra-weights", str(intra_weights),
              "--crop", "4", "--batch", "2", "--F", "8", "--val-every", "2",
              "--threads", "1"]
    assert train_stereo.main(common + ["--steps", "2"]) == 0
    caches = sorted(p.name for p in (run / "cache").iterdir())
    assert any(c.startswith("train-") for c in caches)
    assert train_stereo.main(common + ["--steps", "4"]) == 0  # resumes, reuses the cache
    out = capsys.readouterr().out
    assert "resumed" in out and "stopped at step 4" in out
    assert sorted(p.name for p in (run / "cache").iterdir()) == caches
    val = [json.loads(line) for line in (run / "val.jsonl").read_text().splitlines()]
    assert val and "bpp" in json.dumps(val[-1])
    wpath = tmp_path / "weights" / "learned_stereo.pt"
    wpath.parent.mkdir()
    import shutil

    shutil.copy(intra_weights, wpath.parent / "learned_intra.pt")
    shutil.copy(intra_weights.parent / "manifest.json", wpath.parent / "manifest.json")
    assert train_stereo.main(["--run-dir", str(run), "--export", str(wpath)]) == 0
    manifest = json.loads((wpath.parent / "manifest.json").read_text())
    entry = manifest["learned-stereo"]
    assert entry["training"]["steps"] == 4 and entry["architecture"]["base"]["sha256"] == \
        manifest["learned-intra"]["sha256"]

    from codecflow.codecs.decoding import decode_checked
    from codecflow.codecs.registry import create_codec
    from codecflow.data import Frame, StreamInfo, Unit

    codec = create_codec("learned-stereo", q=20, weights=str(wpath),
                         intra_weights=str(wpath.parent / "learned_intra.pt"))
    left = synth_rgb(80, 48, seed=1)
    info = StreamInfo(width=80, height=48, pix_fmt="rgb24", views=2, unit_kind="pair")
    unit = Unit("pair", 0, "s", [Frame.rgb(left), Frame.rgb(np.roll(left, -4, axis=1))], info)
    coded = codec.encode(unit)
    got = decode_checked(codec, coded.records, info, "pair")
    assert all(np.array_equal(a.planes[0], b.planes[0]) for a, b in zip(got, coded.recon))

"""learned-stereo-si's refiner training: the cache of decoded views (shards, reuse), a few
steps through the shared loop, resume, validation on held-out pairs, export, and a codec built
from the exported weights."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codecflow.training import side_info as train_si  # noqa: E402
from codecflow.training.stereo_data import is_validation  # noqa: E402
from tests.conftest import synth_rgb  # noqa: E402


@pytest.fixture(scope="module")
def intra_weights(tmp_path_factory):
    from codecflow.codecs.learned.model import build_model
    from codecflow.codecs.learned.weights import save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "learned_intra.pt"
    save_weights(build_model({"N": 16, "M": 24}).eval(), path, {"data": ["random (tests)"]})
    return path


def test_cache_train_resume_validate_export_and_code(tmp_path, intra_weights, capsys):
    photos, stereo = tmp_path / "photos", tmp_path / "stereo"
    photos.mkdir()
    stereo.mkdir()
    for i in range(2):
        cv2.imwrite(str(photos / f"p{i}.png"), synth_rgb(96, 80, seed=i))
    names = ["pairA", "pairB", "pairC", "pairD", "pairE", "pairF"]
    assert any(is_validation(n) for n in names) and not all(is_validation(n) for n in names)
    for i, name in enumerate(names):
        left = synth_rgb(96, 64, seed=10 + i)
        cv2.imwrite(str(stereo / f"{name}_L.png"), left)
        cv2.imwrite(str(stereo / f"{name}_R.png"), np.roll(left, -5, axis=1))
    run = tmp_path / "run"
    common = ["--run-dir", str(run), "--stereo", str(stereo), "--photos", str(photos),
              "--synth", "2", "--qs", "0,63", "--intra-weights", str(intra_weights),
              "--crop", "32", "--batch", "2", "--channels", "8", "--layers", "3",
              "--val-every", "2", "--threads", "1"]
    # two shards build the cache apart; training finds it complete
    assert train_si.main(common + ["--cache-only", "--shard", "0/2"]) == 0
    assert train_si.main(common + ["--cache-only", "--shard", "1/2"]) == 0
    cache = next((run / "cache").iterdir())
    assert any(p.name.startswith("val_") for p in cache.iterdir())
    # an unrelated example pairs a view with another shard's: the training call builds those
    assert train_si.main(common + ["--steps", "2"]) == 0
    files = sorted(p.name for p in cache.iterdir())
    n_train = sum(not is_validation(n) for n in names) + 2  # real pairs + synthetic ones
    assert sum(f.startswith("unrelated_") for f in files) == 2 * n_train  # 2 q values
    assert train_si.main(common + ["--steps", "4"]) == 0  # resumes, reuses the cache
    out = capsys.readouterr().out
    assert "resumed" in out and "stopped at step 4" in out
    assert sorted(p.name for p in cache.iterdir()) == files
    val = [json.loads(line) for line in (run / "val.jsonl").read_text().splitlines()]
    assert val and {r["q"] for r in val[-1]["points"]} == set(train_si.VAL_QS)

    wpath = tmp_path / "weights" / "learned_stereo_si.pt"
    wpath.parent.mkdir()
    shutil.copy(intra_weights, wpath.parent / "learned_intra.pt")
    shutil.copy(intra_weights.parent / "manifest.json", wpath.parent / "manifest.json")
    assert train_si.main(["--run-dir", str(run), "--export", str(wpath)]) == 0
    manifest = json.loads((wpath.parent / "manifest.json").read_text())
    entry = manifest["learned-stereo-si"]
    assert entry["training"]["steps"] == 4 and entry["architecture"]["base"]["sha256"] == \
        manifest["learned-intra"]["sha256"]

    from codecflow.codecs.decoding import decode_checked
    from codecflow.codecs.registry import create_codec
    from codecflow.data import Frame, StreamInfo, Unit

    codec = create_codec("learned-stereo-si", q=20, weights=str(wpath),
                         intra_weights=str(wpath.parent / "learned_intra.pt"))
    left = synth_rgb(80, 48, seed=1)
    info = StreamInfo(width=80, height=48, pix_fmt="rgb24", views=2, unit_kind="pair")
    unit = Unit("pair", 0, "s", [Frame.rgb(left), Frame.rgb(np.roll(left, -4, axis=1))], info)
    coded = codec.encode(unit)
    got = decode_checked(codec, coded.records, info, "pair")
    assert all(np.array_equal(a.planes[0], b.planes[0]) for a, b in zip(got, coded.recon))


def test_no_data_is_a_clear_error(tmp_path, intra_weights):
    with pytest.raises(SystemExit, match="no training data"):
        train_si.main(["--run-dir", str(tmp_path / "run"), "--stereo", str(tmp_path / "none"),
                       "--photos", str(tmp_path / "none"), "--intra-weights",
                       str(intra_weights)])

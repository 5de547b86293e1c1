"""learned-stereo's view refiner training: examples made by the codec (cached per pair and q,
prepared in shards), a few steps, resume, validation rows, export, and a codec built from the
exported weights."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codecflow.training import stereo_refine  # noqa: E402
from tests.conftest import synth_rgb  # noqa: E402


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory):
    from codecflow.codecs.learned.conditional import build_coder
    from codecflow.codecs.learned.model import build_model
    from codecflow.codecs.learned.weights import save_weights

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("w")
    intra = save_weights(build_model({"N": 16, "M": 24}).eval(), folder / "learned_intra.pt",
                         {"data": ["random (tests)"]})
    coder = build_coder({"M": 24, "C": 24, "N": 16, "F": 8,
                         "base": {"codec": "learned-intra", "sha256": intra["sha256"]}})
    save_weights(coder.eval(), folder / "learned_stereo.pt", {"data": ["random"]},
                 codec="learned-stereo")
    return folder


def test_prepare_train_resume_export_and_code(tmp_path, base_weights, capsys):
    photos, stereo = tmp_path / "photos", tmp_path / "stereo"
    photos.mkdir()
    stereo.mkdir()
    for i in range(2):
        cv2.imwrite(str(photos / f"p{i}.png"), synth_rgb(96, 80, seed=i))
    for i, name in enumerate(["pairA", "pairB", "pairC", "pairD", "pairE", "pairF"]):
        left = synth_rgb(96, 64, seed=10 + i)
        cv2.imwrite(str(stereo / f"{name}_L.png"), left)
        cv2.imwrite(str(stereo / f"{name}_R.png"), np.roll(left, -5, axis=1))
    run = tmp_path / "run"
    common = ["--run-dir", str(run), "--stereo", str(stereo), "--photos", str(photos),
              "--synth", "2", "--qs-per-pair", "1", "--crop", "32", "--batch", "2",
              "--hidden", "8", "--val-every", "2", "--threads", "1",
              "--intra-weights", str(base_weights / "learned_intra.pt"),
              "--stereo-weights", str(base_weights / "learned_stereo.pt")]
    for k in range(2):
        assert stereo_refine.main(common + ["--prepare-shard", f"{k}/2"]) == 0
    cache = next(run.glob("cache-*"))
    files = sorted(p.name for p in cache.iterdir())
    assert any(f.startswith("train_synth_") for f in files) and \
        any(f.startswith("train_pair") for f in files)
    assert stereo_refine.main(common + ["--steps", "2"]) == 0
    assert stereo_refine.main(common + ["--steps", "4"]) == 0  # resumes, reuses the cache
    out = capsys.readouterr().out
    assert "stopped at step 4" in out and sorted(p.name for p in cache.iterdir()) == files
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 4 and len(state["config"]["commands"]) == 2
    if any(f.startswith("val_") for f in files):
        rows = [json.loads(x) for x in (run / "val.jsonl").read_text().splitlines()]
        assert rows and {"psnr_before", "psnr_after", "gain_db"} <= set(rows[-1])
    wpath = tmp_path / "out" / "learned_stereo_refine.pt"
    assert stereo_refine.main(["--run-dir", str(run), "--export", str(wpath)]) == 0
    entry = json.loads((wpath.parent / "manifest.json").read_text())["learned-stereo-refine"]
    assert entry["training"]["steps"] == 4 and entry["architecture"]["class"] == "ViewRefiner"

    from codecflow.codecs.decoding import decode_checked
    from codecflow.codecs.registry import create_codec
    from codecflow.data import Frame, StreamInfo, Unit

    codec = create_codec("learned-stereo", q=20,
                         weights=str(base_weights / "learned_stereo.pt"),
                         intra_weights=str(base_weights / "learned_intra.pt"),
                         refine_weights=str(wpath))
    assert codec.refiner is not None
    left = synth_rgb(80, 48, seed=1)
    info = StreamInfo(width=80, height=48, pix_fmt="rgb24", views=2, unit_kind="pair")
    unit = Unit("pair", 0, "s", [Frame.rgb(left), Frame.rgb(np.roll(left, -4, axis=1))], info)
    coded = codec.encode(unit)
    got = decode_checked(codec, coded.records, info, "pair")
    assert all(np.array_equal(a.planes[0], b.planes[0]) for a, b in zip(got, coded.recon))


def test_crop_must_fit_the_grid(tmp_path):
    with pytest.raises(SystemExit, match="multiple of 4"):
        stereo_refine.main(["--run-dir", str(tmp_path), "--crop", "30"])

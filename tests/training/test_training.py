"""Training loop: resume continues the step count; export writes loadable weights."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from codecflow.training import image  # noqa: E402

ARGS = ["--synthetic", "--crop", "64", "--batch", "2", "--val-every", "0", "--threads", "1",
        "--log-every", "1", "--N", "16", "--M", "24", "--warmup", "2"]


def _step(run_dir):
    return int(torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"])


def test_resume_and_export(tmp_path):
    run = tmp_path / "run"
    assert image.main(["--run-dir", str(run), "--steps", "2"] + ARGS) == 0
    assert _step(run) == 2
    assert image.main(["--run-dir", str(run), "--steps", "4"] + ARGS) == 0
    assert _step(run) == 4
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert len(ck["config"]["commands"]) == 2 and ck["elapsed"] > 0

    out = tmp_path / "weights" / "learned_intra.pt"
    assert image.main(["--run-dir", str(run), "--export", str(out)]) == 0
    manifest = json.loads((out.parent / "manifest.json").read_text())
    entry = manifest["learned-intra"]
    assert entry["dtype"] == "float16" and entry["training"]["steps"] == 4
    assert entry["bytes"] == out.stat().st_size

    import numpy as np

    from codecflow.data import Frame, StreamInfo

    from codecflow.codecs.registry import create_codec

    codec = create_codec("learned-intra", q=20, weights=str(out))
    assert codec.weights_id == entry["sha256"][:12]
    info = StreamInfo(width=20, height=10, pix_fmt="rgb24")
    rec = codec.decode_picture(
        codec.encode_picture(Frame.rgb(np.full((10, 20, 3), 100, np.uint8)), info), info)
    assert rec.planes[0].shape == (10, 20, 3)

    # a later session whose run folder is gone continues from the shipped weights: the step
    # count and the command history carry on (fresh optimizer, warm-up again)
    run2 = tmp_path / "run2"
    assert image.main(["--run-dir", str(run2), "--steps", "6", "--init-from", str(out)]
                      + ARGS) == 0
    ck2 = torch.load(run2 / "checkpoint.pt", weights_only=True)
    assert ck2["step"] == 6 and ck2["config"]["warmup_from"] == 4
    assert len(ck2["config"]["commands"]) == 3


def test_relaunch_keeps_the_options_it_is_not_given(tmp_path):
    """A relaunch with only --run-dir continues as the run was started (a default must not
    replace the stored learning rate, crop, batch, ...); what it writes on its command line
    changes; a time limit belongs to one call only."""
    run = tmp_path / "run"
    assert image.main(["--run-dir", str(run), "--steps", "2", "--lr", "1e-3",
                       "--time-limit", "600"] + ARGS) == 0
    assert image.main(["--run-dir", str(run), "--steps", "3", "--synthetic"]) == 0
    cfg = torch.load(run / "checkpoint.pt", weights_only=True)["config"]
    assert (cfg["lr"], cfg["crop"], cfg["batch"], cfg["warmup"], cfg["val_every"]) == \
        (1e-3, 64, 2, 2, 0)
    assert cfg["time_limit"] is None and "given" not in cfg
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["lr"] == 1e-3
    assert image.main(["--run-dir", str(run), "--steps", "4", "--synthetic", "--lr", "2e-4",
                       "--batch", "4"]) == 0
    cfg = torch.load(run / "checkpoint.pt", weights_only=True)["config"]
    assert (cfg["lr"], cfg["batch"], cfg["crop"]) == (2e-4, 4, 64)


def test_oversampled_model_trains_resumes_and_exports_beside_the_main_one(tmp_path):
    """--oversampled trains the model of learned-intra's oversampled mode (2x crops, the
    distortion of their 2x2 means); a relaunch keeps it; the export is listed as
    learned-intra-2x, and learned-intra picks it up from beside its main weights."""
    import shutil

    from codecflow.codecs.learned import weights as W

    run = tmp_path / "run"
    assert image.main(["--run-dir", str(run), "--steps", "2", "--oversampled"] + ARGS) == 0
    assert image.main(["--run-dir", str(run), "--steps", "3", "--synthetic"]) == 0
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["config"]["oversampled"] is True and ck["step"] == 3
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in rows)
    main_run = tmp_path / "main"
    assert image.main(["--run-dir", str(main_run), "--steps", "1"] + ARGS) == 0
    folder = tmp_path / "weights"
    assert image.main(["--run-dir", str(main_run), "--export",
                       str(folder / "learned_intra.pt")]) == 0
    assert image.main(["--run-dir", str(run), "--export",
                       str(folder / "learned_intra_2x.pt")]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest[W.OVERSAMPLED_KEY]["training"]["oversampled"] is True
    model, _ = W.load_intra_model(folder / "learned_intra.pt")
    assert model.oversampled_sha == manifest[W.OVERSAMPLED_KEY]["sha256"]
    # a file in its place that is not the one the manifest lists is refused
    stray = tmp_path / "stray"
    stray.mkdir()
    for name in ("learned_intra.pt", "manifest.json"):
        shutil.copy(folder / name, stray / name)
    shutil.copy(folder / "learned_intra.pt", stray / "learned_intra_2x.pt")
    from codecflow.errors import CodecError

    with pytest.raises(CodecError, match="learned_intra_2x.pt has sha256"):
        W.load_intra_model(stray / "learned_intra.pt")


def test_given_options_are_tracked_from_either_command():
    import argparse

    from codecflow.cli import build_parser
    from codecflow.training.options import given

    p = argparse.ArgumentParser()
    image.add_arguments(p)
    assert given(p.parse_args(["--lr", "1e-4", "--decay-at", "5,6", "--synthetic"])) == \
        ["decay_at", "lr", "synthetic"]
    assert given(p.parse_args([])) == []
    args = build_parser("train").parse_args(["train", "image", "--batch", "4", "--crop", "64"])
    assert given(args) == ["batch", "crop"]


def test_dataset_crops_and_lr_schedule():
    import numpy as np

    from codecflow.training.datasets import ImageSet, synthetic_images
    from codecflow.training.loop import lr_at

    ds = ImageSet(synthetic_images(4, 100), crop=64)
    b = ds.sample_batch(np.random.default_rng(0), 3)
    assert b.shape == (3, 3, 64, 64) and b.dtype == np.float32 and 0 <= b.min() <= b.max() <= 1
    cfg = {"lr": 1e-3, "warmup": 10, "decay_at": [100], "decay_factor": 0.1}
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(50, cfg) == pytest.approx(1e-3)
    assert lr_at(100, cfg) == pytest.approx(1e-4)


def test_real_data_loader_skips_without_shared():
    from codecflow.training.datasets import default_data_root, load_training_images

    d = default_data_root() / "images" / "train"
    if not d.is_dir():
        pytest.skip(f"{d} not present")
    images, sets = load_training_images(d, extra=False)
    assert len(images) > 100 and all("kodak" not in s for s in sets)


def test_data_parallel_two_processes(tmp_path, capsys):
    """--procs 2: rank 0 starts rank 1, they split the batch, average gradients, end with
    identical parameters, and only rank 0 writes the checkpoint and the log."""
    run = tmp_path / "run"
    assert image.main(["--run-dir", str(run), "--steps", "3", "--procs", "2"] + ARGS) == 0
    out = capsys.readouterr().out
    assert "replicas identical: yes" in out
    assert _step(run) == 3
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["config"]["procs"] == 2 and ck["device"] == "cpu (2 processes)"


def test_data_parallel_needs_divisible_batch(tmp_path):
    with pytest.raises(SystemExit, match="multiple of --procs"):
        image.main(["--run-dir", str(tmp_path / "r"), "--steps", "1", "--procs", "3"] + ARGS)


def test_device_sampler_matches_cpu_sampler_statistics():
    """The on-device sampler cuts crops of the right size and range, with the same random
    draws as the CPU sampler: a crop at scale 1 without resizing is the same pixels."""
    import numpy as np

    from codecflow.training.datasets import ImageSet, synthetic_images
    from codecflow.training.device_data import DeviceImageSet

    imgs = synthetic_images(3, 64)  # 64-px pictures, 64-px crops: scale 1, no resize
    cpu, dev = ImageSet(imgs, crop=64), DeviceImageSet(imgs, crop=64, device="cpu")
    a = cpu.sample_batch(np.random.default_rng(5), 4)
    b = dev.sample_batch(np.random.default_rng(5), 4).numpy()
    assert b.shape == (4, 3, 64, 64) and b.dtype == np.float32
    assert np.abs(a - b).max() < 1e-6
    big = DeviceImageSet(synthetic_images(2, 200), crop=64, device="cpu")
    c = big.sample_batch(np.random.default_rng(0), 6)
    assert c.shape == (6, 3, 64, 64) and 0 <= float(c.min()) <= float(c.max()) <= 1


def test_bf16_autocast_data_on_device_and_time_limit(tmp_path):
    """The GPU recipe's options run on the CPU too: crops cut by torch, transforms under bf16
    autocast (the loss stays finite and fp32), and --time-limit stops and checkpoints."""
    run = tmp_path / "run"
    assert image.main(["--run-dir", str(run), "--steps", "3", "--amp", "bf16",
                       "--data-on-device", "yes"] + ARGS) == 0
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["loss"] == r["loss"] and r["pixels_per_s"] > 0 for r in rows)  # not NaN
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["config"]["amp"] == "bf16" and ck["device"] == "cpu"
    assert all(v.dtype == torch.float32 for v in ck["model"].values() if v.is_floating_point())
    assert image.main(["--run-dir", str(run), "--time-limit", "1"] + ARGS) == 0
    assert _step(run) > 3


def test_pack_round_trip(tmp_path):
    """A pack holds every picture as a JPEG within the budget and names the original sets;
    a budget too small is refused without writing anything."""
    from codecflow.training import pack as P
    from codecflow.training.datasets import load_training_images, synthetic_images

    imgs = synthetic_images(5, 96)
    idx = P.pack(imgs, ["photos/", "video.yuv (every 10th frame)"], tmp_path / "p", 10**6)
    assert idx["images"] == 5 and idx["quality"] == 95 and idx["bytes"] <= 10**6
    back, sets = load_training_images(tmp_path / "p", extra=False)
    assert len(back) == 5 and back[0].shape == (96, 96, 3)
    assert sets == ["photos/ (packed as JPEG q95)", "video.yuv (every 10th frame) (packed as "
                    "JPEG q95)"]
    with pytest.raises(ValueError, match="more than the budget"):
        P.pack(imgs, [], tmp_path / "q", 1000)
    assert not (tmp_path / "q").exists()

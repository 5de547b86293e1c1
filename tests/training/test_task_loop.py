"""The generic training loop runs other tasks than learned-intra: a conditional latent coder
on cached latents, with checkpoints, resume, logs and real-coding validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codecflow.training.conditional_task import ConditionalLatentTask  # noqa: E402
from codecflow.training.latents import LatentPairs, cache_key, cached_arrays  # noqa: E402
from codecflow.training.loop import run  # noqa: E402


def _pairs(n, seed):
    rng = np.random.default_rng(seed)
    ys = [rng.normal(0, 3, (8, 12, 16)).astype(np.float32) for _ in range(n)]
    cs = [y + rng.normal(0, 0.5, y.shape).astype(np.float32) for y in ys]  # a noisy condition
    return {"y": ys, "c": cs}


def test_latent_cache_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return _pairs(3, 0)

    key = cache_key(weights="abc", data=["a.png", "b.png"], q=40)
    a = cached_arrays(tmp_path, "stereo", key, compute)
    b = cached_arrays(tmp_path, "stereo", key, compute)
    assert len(calls) == 1 and len(b["y"]) == 3
    assert all(np.array_equal(x, z) for x, z in zip(a["c"], b["c"]))
    cached_arrays(tmp_path, "stereo", cache_key(weights="other"), compute)
    assert len(calls) == 2  # another key: computed again


def test_latent_pairs_crop_aligned():
    d = _pairs(2, 1)
    pairs = LatentPairs(d["y"], d["y"], crop=8)  # condition == latent: crops must match
    y, c = pairs.sample_batch(np.random.default_rng(0), 5)
    assert y.shape == c.shape == (5, 8, 8, 8) and np.array_equal(y, c)
    with pytest.raises(ValueError, match="at least 20"):
        LatentPairs(d["y"], d["c"], crop=20)


def test_conditional_task_trains_resumes_and_validates(tmp_path):
    d = _pairs(4, 2)
    val = list(zip(*_pairs(1, 3).values()))
    cfg = {"run_dir": str(tmp_path / "run"), "steps": 3, "batch": 2, "crop": 8, "lr": 1e-3,
           "warmup": 1, "clip": 1.0, "threads": 1, "arch": {"M": 8, "C": 8, "N": 16, "F": 16},
           "val_every": 3, "ckpt_every": 1e9, "log_every": 1, "latent_lambda": 4.0,
           "commands": ["test"]}
    res = run(ConditionalLatentTask(d["y"], d["c"], val=val), dict(cfg))
    assert res["step"] == 3
    run(ConditionalLatentTask(d["y"], d["c"], val=val), {**cfg, "steps": 5})
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 5 and ck["config"]["task"] == "conditional-latent"
    assert ck["config"]["arch"]["M"] == 8
    logs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2, 3, 4, 5]
    val_rows = [json.loads(x) for x in (tmp_path / "run" / "val.jsonl").read_text().splitlines()]
    assert [r["step"] for r in val_rows] == [3] and val_rows[0]["points"][0]["bpp"] > 0

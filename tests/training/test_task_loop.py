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


class _FlakyGradients:
    """Batches 1 and 3 (counted from 0) give a finite loss whose gradient is NaN."""

    def __init__(self, bad=(1, 3)):
        self.calls, self.bad = 0, set(bad)

    def sample_batch(self, rng, n):
        self.calls += 1
        return torch.tensor([float((self.calls - 1) in self.bad or -1 in self.bad)])


class _FlakyTask:
    name = "flaky"
    overridable: tuple = ()

    def __init__(self, bad=(1, 3)):
        self.bad = bad

    def prepare(self, cfg):
        return None

    def build_model(self, arch):
        return torch.nn.Linear(3, 1)

    def architecture(self, model):
        return {}

    def optimizers(self, model, cfg):
        return (torch.optim.Adam(model.parameters(), lr=cfg["lr"]),
                torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3))

    def apply_init(self, model, init, cfg):
        return 0, 0.0

    def data(self, cfg, device):
        return _FlakyGradients(self.bad)

    def loss(self, model, batch, amp_dtype):
        w = model.weight.sum()
        loss = w ** 2
        if batch[0] > 0:  # torch.where picks the zero; the other branch's gradient is NaN
            loss = loss + torch.where(w > 1e9, torch.sqrt(-w.abs() - 1.0), torch.zeros(()))
        return {"loss": loss, "bpp": loss.detach(), "mse": loss.detach()}

    def samples_px(self, cfg):
        return 1

    def validate(self, model):
        return None


def _flaky_cfg(tmp_path, steps):
    return {"run_dir": str(tmp_path / "run"), "steps": steps, "batch": 1, "lr": 1e-2,
            "warmup": 1, "clip": 1.0, "threads": 1, "val_every": 0, "ckpt_every": 1e9,
            "log_every": 2, "commands": ["test"]}


def test_a_step_with_a_non_finite_gradient_is_skipped(tmp_path):
    """A finite loss can have a NaN gradient (here: the gradient of a branch torch.where did
    not pick); the loop skips that step instead of letting the clipping spread NaN into every
    weight, and logs how many it skipped."""
    task = _FlakyTask()
    res = run(task, _flaky_cfg(tmp_path, 4))
    assert res["step"] == 4
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    logs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum(r["skipped"] for r in logs) == 2


def test_gradients_never_finite_stop_the_run_and_keep_the_checkpoint(tmp_path):
    run(_FlakyTask(bad=()), _flaky_cfg(tmp_path, 2))
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(FloatingPointError, match="gradients not finite for 21 steps"):
        run(_FlakyTask(bad=(-1,)), _flaky_cfg(tmp_path, 4))
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before

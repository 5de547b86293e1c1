"""The resumable training loop every learned codec shares; what it trains is a `Task`.

A run lives in one folder (``--run-dir``):

* ``checkpoint.pt``: model, both optimizers, step, RNG states, elapsed seconds, config and the
  command history; written atomically (tmp file + os.replace) every ``ckpt_every`` seconds, at
  the end, and on SIGTERM / SIGINT. Relaunching with the same run dir resumes from it.
* ``log.jsonl``: one JSON line every ``log_every`` steps (step, loss, bpp, mse, psnr, lr,
  steps/s, elapsed hours).
* ``val.jsonl``: periodic validation, as the task defines it (learned-intra: real coding of a
  few Kodak images at a few q values).

The learning-rate schedule is a pure function of the step and the *current* command line
(warm-up, then a factor ``decay_factor`` at each step in ``decay_at``), so a relaunch can change
it without touching the checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch

from codecflow.training.task import Task

# keys of the config that a relaunch may override from its command line (plus the task's)
OVERRIDABLE = ("steps", "lr", "warmup", "decay_at", "decay_factor", "clip", "val_every",
               "ckpt_every", "log_every", "threads", "batch", "device", "amp", "time_limit",
               "decay_time")
# ... of which these belong to one call (when it stops, and the decays timed by its time
# limit): always the new command line's, given or not
PER_CALL = ("steps", "time_limit", "decay_time")


def lr_at(step: int, cfg: dict, time_frac: float | None = None) -> float:
    """Warm-up (counted from the step this optimizer state started at), then step decays:
    at each step of ``decay_at``, and at each fraction of ``decay_time`` once ``time_frac``
    (the part of this call's ``time_limit`` used so far) reaches it."""
    since = step - int(cfg.get("warmup_from", 0))
    lr = cfg["lr"] * min(1.0, (since + 1) / max(1, cfg.get("warmup", 0)))
    for m in cfg.get("decay_at") or ():
        if step >= m:
            lr *= cfg.get("decay_factor", 0.3)
    if time_frac is not None:
        for f in cfg.get("decay_time") or ():
            if time_frac >= f:
                lr *= cfg.get("decay_factor", 0.3)
    return lr


def load_checkpoint(path) -> dict:
    """A run's checkpoint, loaded with ``weights_only=True`` (tensors and plain Python data
    only: a checkpoint cannot run code). Older checkpoints stored torch's version as a
    TorchVersion (a str subclass): allowed explicitly."""
    from torch.torch_version import TorchVersion

    with torch.serialization.safe_globals([TorchVersion]):
        return torch.load(path, map_location="cpu", weights_only=True)


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state(np_rng: np.random.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np_rng.bit_generator.state,
            "python": random.getstate()}


def _set_rng_state(st: dict, np_rng: np.random.Generator) -> None:
    torch.set_rng_state(st["torch"])
    np_rng.bit_generator.state = st["numpy"]
    random.setstate(st["python"])


class _Stop:
    def __init__(self):
        self.flag = False

    def __call__(self, signum, frame):
        self.flag = True


def train(cfg: dict, images: list | None = None, data_sets: list | None = None,
          stop_after: int | None = None, group=None) -> dict:
    """Train learned-intra on ``images`` (uint8 RGB pictures loaded by the caller)."""
    from codecflow.training.intra_task import IntraTask

    return run(IntraTask(images or [], data_sets), cfg, stop_after, group)


def run(task: Task, cfg: dict, stop_after: int | None = None, group=None) -> dict:
    """Train ``task`` until ``cfg["steps"]`` (None: forever) or a signal. Returns the final
    state summary.

    ``stop_after``: stop after this many steps of *this* call (tests). ``group``: a
    `parallel.Group` when several processes train together (each takes ``batch / world``
    samples; only rank 0 writes files).
    """
    from codecflow.training.parallel import SYNC_EVERY, Group

    group = group or Group()
    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    np_rng = np.random.default_rng(cfg.get("seed", 0))
    torch.manual_seed(cfg.get("seed", 0))
    random.seed(cfg.get("seed", 0))

    rewarm = bool(cfg.get("rewarm"))
    # the options written on a relaunch's command line (`options.given`); None: all of cfg's
    # overridable keys replace the stored ones (callers that build cfg themselves)
    given = cfg.pop("given", None)
    given = None if given is None else set(given)
    state = None
    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        old = dict(state["config"])
        for k in OVERRIDABLE + tuple(task.overridable):
            if k in cfg and (given is None or k in given or k in PER_CALL):
                old[k] = cfg[k]
        old["commands"] = old.get("commands", []) + cfg.get("commands", [])
        cfg = old
    init = task.prepare(cfg) if state is None else None
    model = task.build_model(cfg.get("arch"))
    cfg["arch"] = task.architecture(model)
    cfg["task"] = task.name
    device = torch.device(cfg.get("device") or "cpu")
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    amp_dtype = {"off": None, None: None, "bf16": torch.bfloat16}[cfg.get("amp")]
    opt, aux_opt = task.optimizers(model, cfg)
    step, elapsed = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        _set_rng_state(state["rng"], np_rng)
        if rewarm:  # a new LR cycle on a resumed run: warm up again from here
            cfg["warmup_from"] = step
        if group.main:
            print(f"resumed {ckpt_path} at step {step} ({elapsed / 3600:.2f} h)"
                  + (", LR warm-up restarts here" if rewarm else ""), flush=True)
    elif init is not None:
        step, elapsed = task.apply_init(model, init, cfg)
        cfg["warmup_from"] = step  # fresh optimizer state: warm up again
        if group.main:
            print(f"initialised from {cfg['init_from']} (continuing at step {step}, "
                  f"{elapsed / 3600:.2f} h of earlier training)", flush=True)
    model.train()
    world = group.world
    if cfg["batch"] % world:
        raise SystemExit(f"--batch {cfg['batch']} must be a multiple of --procs {world}")
    per_rank = cfg["batch"] // world
    cfg["procs"] = world
    if not group.main:  # other ranks draw other crops and rate positions
        np_rng = np.random.default_rng([int(cfg.get("seed", 0)), step, group.rank])
        torch.manual_seed(int(cfg.get("seed", 0)) * 7919 + step * 31 + group.rank)
    group.broadcast_params(model)

    data = task.data(cfg, device)
    # every data set this run has ever trained on (a resumed run may use another, e.g. a pack)
    cfg["data_sets"] = list(dict.fromkeys(list(cfg.get("data_sets") or []) +
                                          list(getattr(task, "data_sets", []) or [])))

    dev_name = ("cpu" if world == 1 else f"cpu ({world} processes)") if device.type == "cpu" \
        else f"{device.type} ({torch.cuda.get_device_name(device)})"
    t_call = time.time()
    time_limit = cfg.get("time_limit")

    def checkpoint():
        if not group.main:
            return
        save_atomic({"model": model.state_dict(), "opt": opt.state_dict(),
                     "aux_opt": aux_opt.state_dict(), "step": step, "elapsed": elapsed,
                     "rng": _rng_state(np_rng), "config": cfg,
                     "device": dev_name, "torch": str(torch.__version__)}, ckpt_path)

    all_params = [p for g in opt.param_groups for p in g["params"]] + \
        [p for g in aux_opt.param_groups for p in g["params"]]
    stopper = _Stop()
    old_handlers = {}
    if stop_after is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                old_handlers[sig] = signal.signal(sig, stopper)
            except ValueError:  # not the main thread
                pass

    log_f = open(run_dir / "log.jsonl", "a") if group.main else None
    total = cfg.get("steps")
    t_ckpt = time.time()
    t_win, s_win = time.time(), 0
    acc = {"loss": 0.0, "bpp": 0.0, "mse": 0.0, "aux": 0.0}
    done_here = 0
    last = {}
    bad = 0
    skipped = 0  # steps skipped for a non-finite loss or gradient since the last log line
    save_ok = True
    try:
        stop_now = False  # agreed by all ranks (the flag travels in the step's all-reduce)
        while not stop_now and (total is None or step < total) and \
                (stop_after is None or done_here < stop_after):
            t_step = time.time()
            lr = lr_at(step, cfg, (time.time() - t_call) / float(time_limit)
                       if time_limit else None)
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_mult", 1.0)
            batch = data.sample_batch(np_rng, per_rank)
            batch = _to_device(batch, device)
            losses = task.loss(model, batch, amp_dtype)
            finite = math.isfinite(losses["loss"].item())
            opt.zero_grad(set_to_none=True)
            aux_opt.zero_grad(set_to_none=True)
            if finite:
                losses["loss"].backward()
            aux_loss = model.aux_loss() if hasattr(model, "aux_loss") else None
            if aux_loss is not None:  # models without an entropy bottleneck have none
                aux_loss.backward()
            stats = [losses[k].item() if finite else 0.0 for k in ("loss", "bpp", "mse")]
            if time_limit and time.time() - t_call >= float(time_limit):
                stopper.flag = True
            aux = 0.0 if aux_loss is None else aux_loss.item()
            sums = group.average(all_params, stats + [aux, float(stopper.flag), float(not finite)])
            stop_now = sums[4] > 0
            # a finite loss can still give an inf / NaN gradient; one such step would turn every
            # weight into NaN (the clipping multiplies all gradients by the non-finite norm).
            # The gradients are averaged over the ranks first, so all ranks agree to skip.
            if sums[5] > 0 or not grads_finite(all_params):
                bad += 1
                skipped += 1
                if bad > 20:
                    save_ok = False
                    raise FloatingPointError(f"loss or gradients not finite for {bad} steps in "
                                             f"a row at step {step}; checkpoint left as it was")
                continue
            bad = 0
            if cfg.get("clip"):
                torch.nn.utils.clip_grad_norm_(
                    [p for g in opt.param_groups for p in g["params"]], cfg["clip"])
            opt.step()
            aux_opt.step()
            step += 1
            done_here += 1
            s_win += 1
            elapsed += time.time() - t_step
            for k, v in zip(("loss", "bpp", "mse", "aux"), sums[:4]):
                acc[k] += v / world
            if world > 1 and step % SYNC_EVERY == 0:
                group.broadcast_params(model)
            if not group.main:
                continue

            if step % cfg["log_every"] == 0:
                now = time.time()
                n = max(1, s_win)
                mse = acc["mse"] / n
                last = {"step": step, "loss": acc["loss"] / n, "bpp": acc["bpp"] / n, "mse": mse,
                        "psnr": -10 * math.log10(max(mse, 1e-10)), "aux": acc["aux"] / n,
                        "lr": lr, "steps_per_s": n / max(1e-9, now - t_win),
                        "pixels_per_s": n * cfg["batch"] * task.samples_px(cfg)
                        / max(1e-9, now - t_win),
                        "hours": elapsed / 3600, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "skipped": skipped}
                log_f.write(json.dumps(last) + "\n")
                log_f.flush()
                print(f"step {step} loss {last['loss']:.4f} bpp {last['bpp']:.3f} "
                      f"psnr {last['psnr']:.2f} lr {lr:.2e} {last['steps_per_s']:.2f} it/s "
                      f"{elapsed / 3600:.2f} h"
                      + (f" ({skipped} steps skipped: not finite)" if skipped else ""),
                      flush=True)
                t_win, s_win, skipped = now, 0, 0
                acc = dict.fromkeys(acc, 0.0)
            rows = (task.validate(model)
                    if cfg.get("val_every") and step % cfg["val_every"] == 0 else None)
            if rows:
                rec = {"step": step, "hours": elapsed / 3600, "points": rows}
                with open(run_dir / "val.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                print("val " + task.describe(rows), flush=True)
                t_win, s_win = time.time(), 0
                acc = dict.fromkeys(acc, 0.0)
            if time.time() - t_ckpt >= cfg["ckpt_every"]:
                checkpoint()
                t_ckpt = time.time()
        identical = group.replicas_identical(model)
        if not identical:  # never seen; the periodic broadcast would have limited the drift
            print(f"warning: data-parallel replicas differ at step {step}", flush=True)
    finally:
        if save_ok and group.main:
            checkpoint()
            print(f"checkpoint saved at step {step}: {ckpt_path}", flush=True)
        if log_f is not None:
            log_f.close()
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    return {"step": step, "elapsed": elapsed, "last": last, "config": cfg,
            "replicas_identical": identical}


def grads_finite(params: list) -> bool:
    """True when no parameter has an inf or NaN gradient (missing gradients are fine)."""
    return all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)


def _to_device(batch, device):
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return type(batch)(_to_device(b, device) for b in batch)

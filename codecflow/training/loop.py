"""Resumable training loop for the learned intra image model.

A run lives in one folder (``--run-dir``):

* ``checkpoint.pt``: model, both optimizers, step, RNG states, elapsed seconds, config and the
  command history; written atomically (tmp file + os.replace) every ``ckpt_every`` seconds, at
  the end, and on SIGTERM / SIGINT. Relaunching with the same run dir resumes from it.
* ``log.jsonl``: one JSON line every ``log_every`` steps (step, loss, bpp, mse, psnr, lr,
  steps/s, elapsed hours).
* ``val.jsonl``: periodic validation with real compress / decompress on a few Kodak images
  (bpp from the payload bytes, PSNR-RGB), at a few q values.

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
import sys
import time
from pathlib import Path

import numpy as np
import torch

from codecflow.codecs.learned.model import build_model
from codecflow.training.losses import rd_loss

VAL_QS = (0, 21, 42, 63)
VAL_KODAK = ("kodim01.png", "kodim04.png", "kodim07.png", "kodim14.png", "kodim19.png",
             "kodim23.png")
# keys of the config that a relaunch may override from its command line
OVERRIDABLE = ("steps", "lr", "warmup", "decay_at", "decay_factor", "clip", "val_every",
               "ckpt_every", "log_every", "threads", "batch", "crop", "val_dir", "val_images",
               "gain_lr_mult", "device", "amp", "data_on_device", "time_limit",
               "decay_time")


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


def shipped_progress(weights_path) -> tuple[int, float, list, list]:
    """(steps, seconds, commands, data sets) recorded in the manifest for a shipped weights
    file, so a session that starts from the committed weights (its run folder gone) continues
    the count.
    (0, 0.0, [], []) when the file is not the one the manifest describes."""
    from codecflow.codecs.learned import weights as W

    path = Path(weights_path)
    for entry in W.read_manifest(path.parent).values():
        if entry.get("file") == path.name and entry.get("sha256") == W.sha256_file(path):
            t = entry.get("training") or {}
            cmds = t.get("command") or []
            return (int(t.get("steps", 0)), float(t.get("hours", 0.0)) * 3600.0,
                    list(cmds) if isinstance(cmds, list) else [cmds], list(t.get("data") or []))
    return 0, 0.0, [], []


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


def make_optimizers(model, cfg: dict):
    gains = [model.log_gain, model.log_inv_gain]
    gain_ids = {id(p) for p in gains}
    net = [p for n, p in model.named_parameters()
           if not n.endswith(".quantiles") and id(p) not in gain_ids]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam([{"params": net, "lr_mult": 1.0},
                            {"params": gains, "lr_mult": cfg.get("gain_lr_mult", 5.0)}],
                           lr=cfg["lr"])
    aux_opt = torch.optim.Adam(aux, lr=1e-3)
    return opt, aux_opt


def load_val_images(cfg: dict) -> list:
    d = cfg.get("val_dir")
    if not d or not Path(d).is_dir():
        return []
    from codecflow.training.datasets import _read_rgb

    out = []
    for name in cfg.get("val_images") or VAL_KODAK:
        img = _read_rgb(Path(d) / name)
        if img is not None:
            out.append(img)
    return out


def validate(model, images: list, qs=VAL_QS) -> list:
    """Real compress / decompress -> [{"q", "bpp", "psnr_rgb", "enc_s", "dec_s"}] (means)."""
    from codecflow.codecs.learned.intra import decode_rgb, encode_rgb
    from codecflow.codecs.metrics import psnr

    was_training = model.training
    model.eval()
    model.build_tables()
    rows = []
    for q in qs:
        bpp, ps, te, td = [], [], 0.0, 0.0
        for img in images:
            t0 = time.perf_counter()
            payload, _ = encode_rgb(model, img, q)
            t1 = time.perf_counter()
            rec = decode_rgb(model, payload)
            td += time.perf_counter() - t1
            te += t1 - t0
            bpp.append(len(payload) * 8.0 / (img.shape[0] * img.shape[1]))
            ps.append(psnr(img, rec))
        n = max(1, len(images))
        rows.append({"q": q, "bpp": float(np.mean(bpp)), "psnr_rgb": float(np.mean(ps)),
                     "enc_s": te / n, "dec_s": td / n})
    model.train(was_training)
    return rows


def _cpu_copy(model):
    """Validation codes on the CPU (as the shipped codec does by default), from a copy."""
    import copy

    return copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format)


class _Stop:
    def __init__(self):
        self.flag = False

    def __call__(self, signum, frame):
        self.flag = True


def train(cfg: dict, images: list | None = None, data_sets: list | None = None,
          stop_after: int | None = None, group=None) -> dict:
    """Train until ``cfg["steps"]`` (None: forever) or a signal. Returns the final state summary.

    ``images``: uint8 RGB training pictures (loaded by the caller). ``stop_after``: stop after
    this many steps of *this* call (tests). ``group``: a `parallel.Group` when several
    processes train together (each takes ``batch / world`` crops; only rank 0 writes files).
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
    state = None
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        old = dict(state["config"])
        for k in OVERRIDABLE:
            if k in cfg:
                old[k] = cfg[k]
        old["commands"] = old.get("commands", []) + cfg.get("commands", [])
        cfg = old
    init = None
    if state is None and cfg.get("init_from"):
        from codecflow.codecs.learned.weights import load_state

        init = load_state(cfg["init_from"])
        a = init.get("architecture") or {}
        cfg["arch"] = {k: a[k] for k in ("N", "M", "lambdas") if k in a} or cfg.get("arch")
    model = build_model(cfg.get("arch"))
    cfg["arch"] = {"N": model.N, "M": model.M, "lambdas": list(model.lambdas)}
    device = torch.device(cfg.get("device") or "cpu")
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    amp_dtype = {"off": None, None: None, "bf16": torch.bfloat16}[cfg.get("amp")]
    opt, aux_opt = make_optimizers(model, cfg)
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
        from codecflow.codecs.learned.weights import strip_cdf_buffers

        sd = {k: v.float() if v.is_floating_point() else v
              for k, v in strip_cdf_buffers(init["state_dict"]).items()}
        torch.nn.Module.load_state_dict(model, sd, strict=False)
        step, elapsed, history, earlier_data = shipped_progress(cfg["init_from"])
        cfg["commands"] = history + cfg.get("commands", [])
        cfg["data_sets"] = earlier_data
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

    from codecflow.training.datasets import ImageSet

    on_device = cfg.get("data_on_device")
    if on_device is None:
        on_device = device.type != "cpu"
    if on_device:
        from codecflow.training.device_data import DeviceImageSet

        data = DeviceImageSet(images, crop=cfg["crop"], device=device)
    else:
        data = ImageSet(images, crop=cfg["crop"])
    val_images = load_val_images(cfg)
    # every data set this run has ever trained on (a resumed run may use another, e.g. a pack)
    cfg["data_sets"] = list(dict.fromkeys(list(cfg.get("data_sets") or []) +
                                          list(data_sets or [])))

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
                     "device": dev_name, "torch": torch.__version__}, ckpt_path)

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
    K = model.K
    t_ckpt = time.time()
    t_win, s_win = time.time(), 0
    acc = {"loss": 0.0, "bpp": 0.0, "mse": 0.0, "aux": 0.0}
    done_here = 0
    last = {}
    bad = 0
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
            x = data.sample_batch(np_rng, per_rank)
            x = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
            x = x.to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            pos = (torch.rand(x.shape[0]) * (K - 1)).to(device)
            lam = model.pos_to_lambda(pos)
            out = model(x, pos, amp_dtype)
            losses = rd_loss(out, x, lam)
            finite = math.isfinite(losses["loss"].item())
            opt.zero_grad(set_to_none=True)
            aux_opt.zero_grad(set_to_none=True)
            if finite:
                losses["loss"].backward()
            aux_loss = model.aux_loss()
            aux_loss.backward()
            stats = [losses[k].item() if finite else 0.0 for k in ("loss", "bpp", "mse")]
            if time_limit and time.time() - t_call >= float(time_limit):
                stopper.flag = True
            sums = group.average(all_params, stats + [aux_loss.item(), float(stopper.flag),
                                                      float(not finite)])
            stop_now = sums[4] > 0
            if sums[5] > 0:
                bad += 1
                if bad > 20:
                    save_ok = False
                    raise FloatingPointError(f"loss not finite for {bad} steps at step {step}; "
                                             f"checkpoint left as it was")
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
                        "pixels_per_s": n * cfg["batch"] * cfg["crop"] ** 2
                        / max(1e-9, now - t_win),
                        "hours": elapsed / 3600, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
                log_f.write(json.dumps(last) + "\n")
                log_f.flush()
                print(f"step {step} loss {last['loss']:.4f} bpp {last['bpp']:.3f} "
                      f"psnr {last['psnr']:.2f} lr {lr:.2e} {last['steps_per_s']:.2f} it/s "
                      f"{elapsed / 3600:.2f} h", flush=True)
                t_win, s_win = now, 0
                acc = dict.fromkeys(acc, 0.0)
            if cfg.get("val_every") and step % cfg["val_every"] == 0 and val_images:
                rows = validate(model if device.type == "cpu" else _cpu_copy(model), val_images)
                rec = {"step": step, "hours": elapsed / 3600, "images": len(val_images),
                       "points": rows}
                with open(run_dir / "val.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                print("val " + "  ".join(f"q{r['q']}: {r['bpp']:.3f} bpp {r['psnr_rgb']:.2f} dB"
                                         for r in rows), flush=True)
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


def command_line() -> str:
    return " ".join([Path(sys.executable).name, "-m", "codecflow.training.image"] + sys.argv[1:])

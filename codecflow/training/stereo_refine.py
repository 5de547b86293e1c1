"""`python -m codecflow.training.stereo_refine` (`codecflow train stereo-refine`): train,
resume, export learned-stereo's view refiner (`codecs/learned/refine.py`), everything else
frozen (see docs/training.md).

    python -m codecflow.training.stereo_refine --run-dir runs/stereo_refine --threads 1
    python -m codecflow.training.stereo_refine --run-dir runs/stereo_refine \\
        --export weights/learned_stereo_refine.pt

Examples are made by the codec itself: each training pair (real pairs of the training split,
and pairs synthesised from photos) is coded by learned-stereo at a few random q, and the
example is (the source second view, the second view every decoder synthesises, the decoded
first view moved by the signalled disparity field, q). They are cached one file per pair and q
in the run folder, so an interrupted preparation resumes where it stopped. The refiner is then
trained on random crops to minimise the MSE of the refined view; validation measures the PSNR
gain on the held-out pairs.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

from codecflow.training.datasets import default_data_root
from codecflow.training.latents import cache_key

VAL_QS = [16, 48]
CACHE_VERSION = 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    root = default_data_root()
    p.add_argument("--run-dir", default="runs/stereo_refine", help="run folder")
    p.add_argument("--stereo", default=str(root / "stereo"),
                   help="folder of NAME_L / NAME_R pairs (default ../shared/data/stereo)")
    p.add_argument("--photos", default=str(root / "images" / "train"),
                   help="photos to synthesise pairs from (default ../shared/data/images/train)")
    p.add_argument("--synth", type=int, default=60, help="synthetic pairs (0: none)")
    p.add_argument("--qs-per-pair", type=int, default=3, help="random q values per real pair")
    p.add_argument("--max-side", type=int, default=1024,
                   help="real pairs larger than this are coded from their central crop")
    p.add_argument("--intra-weights", default=None,
                   help="learned-intra weights (default: shipped)")
    p.add_argument("--stereo-weights", default=None,
                   help="learned-stereo weights the refiner builds on (default: shipped)")
    p.add_argument("--hidden", type=int, default=48, help="hidden channels (new runs only)")
    p.add_argument("--depth", type=int, default=3, help="convolutions (new runs only)")
    p.add_argument("--steps", type=int, default=None, help="total steps (default: until killed)")
    p.add_argument("--crop", type=int, default=128, help="training crop, pixels (multiple of 4)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--decay-at", type=lambda s: [int(v) for v in s.split(",") if v],
                   default=[], help="steps at which the learning rate drops 3x")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--ckpt-every", type=float, default=300.0, help="seconds")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", metavar="PATH", default=None,
                   help="write fp16 weights from the run's checkpoint to PATH and exit")
    p.add_argument("--prepare-shard", metavar="K/N", default=None,
                   help="only make the examples K of every N (K = 0..N-1) and exit: run N "
                        "such processes to prepare in parallel")


# ------------------------------------------------------------------------------ examples
def central_crop(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    ch, cw = min(h, max_side), min(w, max_side)
    i, j = (h - ch) // 2, (w - cw) // 2
    return rgb[i:i + ch, j:j + cw]


def code_example(intra, coder, left: np.ndarray, right: np.ndarray, q: int) -> dict:
    """learned-stereo (left first) on one pair at q -> the refiner's example arrays."""
    from codecflow.codecs.learned.intra import encode_rgb_latent
    from codecflow.codecs.learned.stereo import code_second

    _, pic1, _ = encode_rgb_latent(intra, left, q)
    c = code_second(intra, coder, right, pic1, q, 0)
    return {"target": right, "picture": c["picture"], "aligned": c["aligned"],
            "q": np.array([q], dtype=np.int16)}


def build_examples(args, intra, coder, key: str, folder: Path) -> tuple:
    """-> (training examples, validation examples, data sets); each example a dict of arrays.
    Missing cache files are computed (resumable); existing ones are read."""
    from codecflow.training.stereo_data import read_rgb, split_pairs, synthesise_pair

    stereo = Path(args.stereo)
    train_pairs, val_pairs = split_pairs(stereo) if stereo.is_dir() else ([], [])
    photos = sorted(p for p in Path(args.photos).glob("*") if p.is_file()) \
        if args.synth and Path(args.photos).is_dir() else []
    photos = photos[:args.synth]
    if not train_pairs and not photos:
        raise SystemExit(f"no training data: no stereo pairs under {args.stereo} and no photos "
                         f"under {args.photos}")
    cache = folder / f"cache-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    jobs = []  # (file name, loader of (left, right), q)
    for name, lp, rp in train_pairs:
        for q in rng.choice(64, size=args.qs_per_pair, replace=False).tolist():
            jobs.append(("train", f"{name}_q{q}", (lp, rp), int(q)))
    for path in photos:
        jobs.append(("train", f"synth_{path.stem}", path, int(rng.integers(64))))
    for name, lp, rp in val_pairs:
        for q in VAL_QS:
            jobs.append(("val", f"{name}_q{q}", (lp, rp), q))
    out: dict = {"train": [], "val": []}
    t0 = time.time()
    shard = None
    if args.prepare_shard:
        k, n = (int(v) for v in args.prepare_shard.split("/"))
        shard = (k, n)
    for i, (split, name, src, q) in enumerate(jobs):
        f = cache / f"{split}_{name}.npz"
        if shard and i % shard[1] != shard[0]:
            continue
        if not f.is_file():
            if isinstance(src, tuple):
                left, right = (central_crop(read_rgb(p), args.max_side) for p in src)
            else:
                left, right = synthesise_pair(read_rgb(str(src)),
                                              np.random.default_rng([args.seed, i]))
            ex = code_example(intra, coder, left, right, q)
            tmp = f.with_name(f.stem + ".tmp.npz")
            np.savez(tmp, **ex)
            tmp.replace(f)
            print(f"  example {i + 1}/{len(jobs)} {name} ({time.time() - t0:.0f} s)",
                  flush=True)
        if shard is None:
            with np.load(f) as z:
                out[split].append({k: z[k] for k in z.files})
    sets = ([f"{args.stereo} ({len(train_pairs)} pairs x {args.qs_per_pair} q; "
             f"{len(val_pairs)} held out)"] if train_pairs else []) + \
           ([f"{args.photos} ({len(photos)} synthetic pairs)"] if photos else [])
    return out["train"], out["val"], sets


def sample_batch(examples: list, rng: np.random.Generator, n: int, crop: int) -> tuple:
    """-> (target, picture, aligned) float32 B x 3 x crop x crop, q (B,)."""
    t, p, a, q = [], [], [], []
    usable = [e for e in examples if min(e["target"].shape[:2]) >= crop]
    for _ in range(n):
        e = usable[int(rng.integers(len(usable)))]
        h, w = e["target"].shape[:2]
        i = int(rng.integers(0, (h - crop) // 4 + 1)) * 4  # on the refiner's 4 x 4 grid
        j = int(rng.integers(0, (w - crop) // 4 + 1)) * 4
        for lst, k in ((t, "target"), (p, "picture"), (a, "aligned")):
            lst.append(e[k][i:i + crop, j:j + crop].transpose(2, 0, 1))
        q.append(float(e["q"][0]))
    return (np.stack(t).astype(np.float32), np.stack(p).astype(np.float32),
            np.stack(a).astype(np.float32), np.array(q, dtype=np.float32))


def psnr(mse: float) -> float:
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def validate(model, examples: list) -> dict:
    """PSNR of the second view before and after refinement (exact integer refiner, as the
    decoder runs it), means over the held-out examples."""
    before, after = [], []
    for e in examples:
        out = model.refine(e["picture"], e["aligned"], int(e["q"][0]))
        tgt = e["target"].astype(np.float64)
        before.append(psnr(float(np.mean((e["picture"] - tgt) ** 2))))
        after.append(psnr(float(np.mean((out - tgt) ** 2))))
    model._exact = None
    return {"psnr_before": float(np.mean(before)), "psnr_after": float(np.mean(after)),
            "gain_db": float(np.mean(after) - np.mean(before)), "n": len(examples)}


# ---------------------------------------------------------------------------- training
def command() -> str:
    argv = sys.argv[1:]
    for i in range(len(argv) - 1):
        if argv[i] == "train" and argv[i + 1] == "stereo-refine":
            argv = argv[i + 2:]
            break
    return "python -m codecflow.training.stereo_refine " + " ".join(argv)


def save_atomic(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def export(run_dir: Path, out: str) -> dict:
    import torch

    from codecflow.codecs.learned import weights as W
    from codecflow.codecs.learned.refine import build_refiner

    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.is_file():
        raise SystemExit(f"no checkpoint at {ckpt}: train first")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    cfg = state["config"]
    model = build_refiner(cfg["arch"])
    model.load_state_dict(state["model"])
    from codecflow.training.conditional_cli import _relative

    training = {"data": [_relative(d) for d in cfg.get("data_sets", [])],
                "command": cfg.get("commands", []), "steps": int(state["step"]),
                "device": "cpu", "hours": round(float(state["elapsed"]) / 3600, 3),
                "crop": cfg["crop"], "batch": cfg["batch"], "lr": cfg["lr"],
                "decay_at": cfg.get("decay_at", []), "last_validation": state.get("val"),
                "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "export_command": command(), "base": cfg["arch"].get("base")}
    return W.save_weights(model, out, training, codec="learned-stereo-refine")


def run(args) -> int:
    run_dir = Path(args.run_dir)
    if args.export:
        entry = export(run_dir, args.export)
        print(f"exported {args.export}: {entry['bytes']} bytes, sha256 {entry['sha256']}, "
              f"{entry['training']['steps']} steps")
        return 0
    import torch

    from codecflow.codecs.learned import weights as W
    from codecflow.codecs.learned.conditioned import load_conditional_coder
    from codecflow.codecs.learned.refine import build_refiner

    if args.threads:
        torch.set_num_threads(int(args.threads))
    if args.crop % 4:
        raise SystemExit(f"--crop must be a multiple of 4, got {args.crop}")
    intra, intra_sha = W.load_intra_model(args.intra_weights, "cpu")
    coder, coder_sha = load_conditional_coder(
        args.stereo_weights or W.default_path("learned-stereo"), intra_sha)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    state = (torch.load(ckpt_path, map_location="cpu", weights_only=False)
             if ckpt_path.is_file() else None)
    key = cache_key(intra=intra_sha, coder=coder_sha, version=CACHE_VERSION, seed=args.seed,
                    qs_per_pair=args.qs_per_pair, synth=args.synth, max_side=args.max_side)
    with torch.no_grad():
        train, val, sets = build_examples(args, intra, coder, key, run_dir)
    if args.prepare_shard:
        print(f"examples of shard {args.prepare_shard} ready")
        return 0
    print(f"{len(train)} training examples, {len(val)} validation examples", flush=True)
    if state is not None:
        cfg = state["config"]
        if cfg["arch"].get("base", {}).get("sha256") != coder_sha:
            raise SystemExit(f"{ckpt_path} was trained on other learned-stereo weights; use a "
                             f"new --run-dir")
        for k in ("steps", "lr", "decay_at", "batch", "crop", "val_every", "ckpt_every"):
            cfg[k] = getattr(args, k)
        cfg["commands"] = cfg.get("commands", []) + [command()]
    else:
        cfg = {"arch": {"class": "ViewRefiner", "hidden": args.hidden, "depth": args.depth,
                        "base": {"codec": "learned-stereo", "sha256": coder_sha}},
               "steps": args.steps, "lr": args.lr, "decay_at": args.decay_at,
               "batch": args.batch, "crop": args.crop, "val_every": args.val_every,
               "ckpt_every": args.ckpt_every, "commands": [command()], "data_sets": sets}
    model = build_refiner(cfg["arch"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    step, elapsed = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
    rng = np.random.default_rng([args.seed, step])
    stop = {"flag": False}

    def on_signal(*_):
        stop["flag"] = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    last_val = state.get("val") if state else None

    def save():
        save_atomic({"config": cfg, "model": model.state_dict(), "opt": opt.state_dict(),
                     "step": step, "elapsed": elapsed, "val": last_val}, ckpt_path)

    t_run, t_ckpt, acc = time.time(), time.time(), []
    model.train()
    while not stop["flag"] and (cfg["steps"] is None or step < cfg["steps"]):
        lr = cfg["lr"] * (1 / 3) ** sum(step >= d for d in cfg.get("decay_at", []))
        for g in opt.param_groups:
            g["lr"] = lr
        t, p, a, q = (torch.from_numpy(v) for v in sample_batch(train, rng, cfg["batch"],
                                                                 cfg["crop"]))
        out = model(p, a, q)
        loss = torch.mean((out - t) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        acc.append((float(loss.detach()), float(torch.mean((p - t) ** 2))))
        now = time.time()
        elapsed += now - t_run
        t_run = now
        if step % args.log_every == 0:
            m_after, m_before = np.mean(acc, axis=0)
            acc = []
            print(f"step {step} mse {m_after:.3f} (unrefined {m_before:.3f}: "
                  f"{psnr(m_after) - psnr(m_before):+.3f} dB) lr {lr:.1e} "
                  f"{elapsed / 3600:.2f} h", flush=True)
        if val and cfg["val_every"] and step % cfg["val_every"] == 0:
            model.eval()
            last_val = {"step": step, **validate(model, val)}
            model.train()
            print(f"val {json.dumps(last_val)}", flush=True)
            with open(run_dir / "val.jsonl", "a") as f:
                f.write(json.dumps(last_val) + "\n")
            t_run = time.time()  # validation time is not training time
        if time.time() - t_ckpt >= cfg["ckpt_every"]:
            save()
            t_ckpt = time.time()
    save()
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    print(f"stopped at step {step} ({elapsed / 3600:.2f} h)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m codecflow.training.stereo_refine",
                                description="train / resume / export learned-stereo's view "
                                            "refiner")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

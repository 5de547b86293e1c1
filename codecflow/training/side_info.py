"""`python -m codecflow.training.side_info` (`codecflow train stereo-si`): train, resume,
export learned-stereo-si's side-information refiner (`codecs/learned/side_info.py`) on
cached decoded pictures (see docs/training.md).

    python -m codecflow.training.side_info --run-dir runs/stereo_si --threads 1   # train/resume
    python -m codecflow.training.side_info --run-dir runs/stereo_si --export weights/learned_stereo_si.pt

The first call codes both views of every training pair (real stereo pairs and pairs
synthesised from photos) with learned-intra at each q, and caches, per view, the original,
the decoded picture and the other decoded view moved onto it with its matching cost, exactly
as the decoder computes them; plus, per pair and q, the left view matched against an
unrelated picture (the refiner must learn to leave it alone). ``--cache-only --shard I/N``
builds the part I of N of the cache (several processes at once) and exits.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from codecflow.training.conditional_cli import _int_list, command
from codecflow.training.datasets import default_data_root
from codecflow.training.options import given, track_given
from codecflow.training.task import NoAuxOptimizer, Task

CACHE_VERSION = 1
VAL_QS = (0, 32)


def add_arguments(p: argparse.ArgumentParser) -> None:
    root = default_data_root()
    p.add_argument("--run-dir", default="runs/stereo_si", help="run folder (cache, checkpoint)")
    p.add_argument("--stereo", default=str(root / "stereo"),
                   help="folder of NAME_L / NAME_R pairs (default ../shared/data/stereo)")
    p.add_argument("--photos", default=str(root / "images" / "train"),
                   help="photos to synthesise pairs from (default ../shared/data/images/train)")
    p.add_argument("--synth", type=int, default=48, help="synthetic pairs (0: none)")
    p.add_argument("--qs", type=_int_list, default=[0, 16, 32, 48, 63],
                   help="q values the views are coded at")
    p.add_argument("--max-width", type=int, default=960,
                   help="wider pairs are downscaled to this width before coding")
    p.add_argument("--intra-weights", default=None,
                   help="learned-intra weights the refiner builds on (default: shipped)")
    p.add_argument("--cache-only", action="store_true", help="build the cache and exit")
    p.add_argument("--shard", default="0/1", help="with --cache-only: build part I/N")
    p.add_argument("--steps", type=int, default=None, help="total steps (default: until killed)")
    p.add_argument("--crop", type=int, default=128, help="crop side in pixels (even)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--unrelated", type=float, default=0.15,
                   help="share of samples whose side view is an unrelated picture")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--decay-at", type=_int_list, default=[])
    p.add_argument("--decay-factor", type=float, default=0.3)
    p.add_argument("--time-limit", type=float, default=None,
                   help="stop this call after this many seconds (checkpoint written)")
    p.add_argument("--decay-time", type=lambda s: [float(v) for v in s.split(",") if v],
                   default=[], help="with --time-limit: decay the LR at these fractions of it")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--channels", type=int, default=32, help="refiner width (new runs only)")
    p.add_argument("--layers", type=int, default=5, help="refiner convolutions (new runs only)")
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--ckpt-every", type=float, default=300.0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", metavar="PATH", default=None,
                   help="write fp16 weights from the run's checkpoint to PATH and exit")
    track_given(p)


# ------------------------------------------------------------------------------ the cache
def _items(args) -> tuple:
    """-> (training items, validation items, data set descriptions); an item is
    (name, left source, right source) with sources a path or ("synth", photo, seed)."""
    from codecflow.training.stereo_data import split_pairs

    train, val = split_pairs(args.stereo) if Path(args.stereo).is_dir() else ([], [])
    photos = sorted(p for p in Path(args.photos).glob("*") if p.is_file()) \
        if args.synth and Path(args.photos).is_dir() else []
    step = max(1, len(photos) // max(1, args.synth)) if photos else 1
    synth = [(f"synth_{p.stem}", ("synth", str(p), i), None)
             for i, p in enumerate(photos[::step][:args.synth])]
    sets = ([f"{args.stereo} ({len(train)} pairs; {len(val)} held out)"] if train else []) + \
           ([f"{args.photos} ({len(synth)} synthetic pairs)"] if synth else [])
    if not train and not synth:
        raise SystemExit(f"no training data: no stereo pairs under {args.stereo} and no photos "
                         f"under {args.photos}")
    return train + synth, val, sets


def _views(item, max_width: int) -> tuple:
    import cv2

    from codecflow.training.stereo_data import read_rgb, synthesise_pair

    name, left, right = item
    if isinstance(left, tuple):
        _, photo, seed = left
        views = synthesise_pair(read_rgb(photo), np.random.default_rng([7, seed]))
    else:
        views = (read_rgb(left), read_rgb(right))
    h, w = views[0].shape[:2]
    if w > max_width:
        size = (max_width, max(16, round(h * max_width / w)))
        views = tuple(cv2.resize(v, size, interpolation=cv2.INTER_AREA) for v in views)
    return views


def _cache_dir(args, intra_sha: str) -> Path:
    return Path(args.run_dir) / "cache" / f"v{CACHE_VERSION}_{intra_sha[:12]}_w{args.max_width}"


def _cache_one(model, item, q: int, max_width: int, path: Path) -> None:
    from codecflow.codecs.learned.intra import encode_rgb
    from codecflow.codecs.learned.side_info import match_rows, photometric_match

    views = _views(item, max_width)
    dec = [encode_rgb(model, v, q)[1] for v in views]
    arrays = {"q": np.array([q], np.int16)}
    for v, sign in ((0, -1), (1, +1)):
        moved, cost = match_rows(dec[v], photometric_match(dec[1 - v], dec[v]), sign)
        arrays.update({f"orig{v}": views[v], f"dec{v}": dec[v], f"moved{v}": moved,
                       f"cost{v}": cost.astype(np.uint16)})
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _cache_unrelated(item_path: Path, other_path: Path, path: Path) -> None:
    import cv2

    from codecflow.codecs.learned.side_info import match_rows, photometric_match

    a, b = np.load(item_path), np.load(other_path)
    view, other = a["dec0"], b["dec0"]
    other = cv2.resize(other, (view.shape[1], view.shape[0]), interpolation=cv2.INTER_AREA)
    moved, cost = match_rows(view, photometric_match(other, view), -1)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, q=a["q"], orig0=a["orig0"], dec0=view, moved0=moved,
             cost0=cost.astype(np.uint16))
    tmp.replace(path)


def build_cache(args, model, intra_sha: str, shard: tuple = (0, 1)) -> tuple:
    """Build what is missing of the cache (items i with i % N == I). -> (training files,
    unrelated files, validation files, data sets)."""
    train, val, sets = _items(args)
    folder = _cache_dir(args, intra_sha)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(it, q, folder / f"{it[0]}_q{q}.npz") for it in train for q in args.qs] + \
           [(it, q, folder / f"val_{it[0]}_q{q}.npz") for it in val for q in VAL_QS]
    t0 = time.time()
    for i, (it, q, path) in enumerate(jobs):
        if i % shard[1] != shard[0] or path.is_file():
            continue
        _cache_one(model, it, q, args.max_width, path)
        print(f"cache {i + 1}/{len(jobs)} {path.name} ({time.time() - t0:.0f} s)", flush=True)
    train_files = [folder / f"{it[0]}_q{q}.npz" for it in train for q in args.qs]
    unrelated = []
    for i, it in enumerate(train):  # the left view against the next pair's, at each q
        other = train[(i + len(train) // 2) % len(train)]
        for q in args.qs:
            path = folder / f"unrelated_{it[0]}_q{q}.npz"
            unrelated.append(path)
            a, b = folder / f"{it[0]}_q{q}.npz", folder / f"{other[0]}_q{q}.npz"
            if (i % shard[1] == shard[0] and not path.is_file() and a.is_file()
                    and b.is_file()):
                _cache_unrelated(a, b, path)
    val_files = [folder / f"val_{it[0]}_q{q}.npz" for it in val for q in VAL_QS]
    return train_files, unrelated, val_files, sets


def _load(files: list, views=(0, 1)) -> list:
    """npz files -> [(orig, dec, moved, cost, q)] per view held."""
    out = []
    for f in files:
        z = np.load(f)
        for v in views:
            if f"dec{v}" in z:
                out.append((z[f"orig{v}"], z[f"dec{v}"], z[f"moved{v}"],
                            z[f"cost{v}"].astype(np.int32), int(z["q"][0])))
    return out


# ------------------------------------------------------------------------------ the task
class Crops:
    def __init__(self, related: list, unrelated: list, crop: int, p_unrelated: float):
        self.related, self.unrelated = related, unrelated
        self.crop, self.p = crop, p_unrelated

    def sample_batch(self, rng: np.random.Generator, n: int):
        c = self.crop
        arrays = [[] for _ in range(5)]
        for _ in range(n):
            pool = self.unrelated if self.unrelated and rng.random() < self.p else self.related
            orig, dec, moved, cost, q = pool[int(rng.integers(len(pool)))]
            h, w = dec.shape[:2]
            y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
            parts = [a[y:y + c, x:x + c] for a in (orig, dec, moved, cost)]
            if rng.random() < 0.5:
                parts = [p[:, ::-1] for p in parts]
            if rng.random() < 0.5:
                parts = [p[::-1] for p in parts]
            for k, p in enumerate(parts):
                arrays[k].append(np.ascontiguousarray(p))
            arrays[4].append(q)
        img = [np.stack(a).transpose(0, 3, 1, 2).astype(np.float32) for a in arrays[:3]]
        cost = np.stack(arrays[3])[:, None].astype(np.float32)
        return (*img, cost, np.asarray(arrays[4], np.float32))


class SideInfoTask(Task):
    name = "side-info-refiner"
    overridable = ("unrelated", "crop")

    def __init__(self, related: list, unrelated: list, val: list, base: dict,
                 data_sets: list):
        self.related, self.unrelated, self.val = related, unrelated, val
        self.base, self.data_sets = base, data_sets

    def build_model(self, arch):
        from codecflow.codecs.learned.side_info import build_refiner

        return build_refiner({**(arch or {}), "base": (arch or {}).get("base", self.base)})

    def optimizers(self, model, cfg):
        import torch

        return (torch.optim.Adam([{"params": list(model.parameters()), "lr_mult": 1.0}],
                                 lr=cfg["lr"]), NoAuxOptimizer())

    def data(self, cfg, device):
        return Crops(self.related, self.unrelated, int(cfg["crop"]), float(cfg["unrelated"]))

    def loss(self, model, batch, amp_dtype) -> dict:
        import torch

        from codecflow.codecs.learned.side_info import PIXEL_SCALE, input_planes

        orig, dec, moved, cost, q = batch
        out = dec + PIXEL_SCALE * model(input_planes(dec, moved, cost, q))
        mse = ((out - orig) ** 2).mean(dim=(1, 2, 3))
        plain = ((dec - orig) ** 2).mean(dim=(1, 2, 3))
        # relative MSE: every q counts alike (a dB at q 63 is as hard to win as at q 0)
        loss = (mse / (plain + 0.25)).mean()
        return {"loss": loss, "bpp": torch.zeros(()), "mse": mse.mean() / 255.0 ** 2}

    def samples_px(self, cfg) -> int:
        return int(cfg["crop"]) ** 2

    def validate(self, model):
        if not self.val:
            return None
        from codecflow.codecs.learned.side_info import ExactRefiner, related
        from codecflow.codecs.metrics import psnr

        exact = ExactRefiner(model)
        rows = []
        for qv in VAL_QS:
            gains, used = [], 0
            for orig, dec, moved, cost, q in self.val:
                if q != qv:
                    continue
                if related(cost):
                    used += 1
                    gains.append(psnr(exact(dec, moved, cost, q), orig) - psnr(dec, orig))
                else:
                    gains.append(0.0)
            rows.append({"q": qv, "views": len(gains), "refined": used,
                         "gain_db": float(np.mean(gains)) if gains else 0.0})
        return rows

    def describe(self, rows) -> str:
        return ", ".join(f"q{r['q']} {r['gain_db']:+.3f} dB ({r['refined']}/{r['views']})"
                         for r in rows)


def export(run_dir, out, cmd: str) -> dict:
    from codecflow.codecs.learned import weights as W
    from codecflow.codecs.learned.side_info import build_refiner
    from codecflow.training.conditional_cli import _relative
    from codecflow.training.loop import load_checkpoint

    ckpt = Path(run_dir) / "checkpoint.pt"
    if not ckpt.is_file():
        raise SystemExit(f"no checkpoint at {ckpt}: train first")
    state = load_checkpoint(ckpt)
    cfg = state["config"]
    model = build_refiner(cfg["arch"])
    model.load_state_dict(state["model"])
    training = {"data": [_relative(d) for d in cfg.get("data_sets", [])],
                "command": cfg.get("commands", []), "steps": int(state["step"]),
                "device": state.get("device", "cpu"),
                "hours": round(float(state["elapsed"]) / 3600, 3), "crop": cfg["crop"],
                "batch": cfg["batch"], "lr": cfg["lr"], "decay_at": cfg.get("decay_at", []),
                "qs": cfg.get("qs"), "unrelated": cfg.get("unrelated"),
                "exported": time.strftime("%Y-%m-%dT%H:%M:%S"), "export_command": cmd,
                "base": cfg["arch"].get("base")}
    entry = W.save_weights(model, out, training, "learned-stereo-si")
    print(f"wrote {out} ({entry['bytes']} bytes, sha256 {entry['sha256'][:12]}), step "
          f"{training['steps']}")
    return entry


def run(args) -> int:
    import torch

    from codecflow.codecs.learned import weights as W
    from codecflow.training import loop

    cmd = command("codecflow.training.side_info", "stereo-si")
    if args.export:
        export(args.run_dir, args.export, cmd)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.crop % 2:
        raise SystemExit(f"--crop must be even, got {args.crop}")
    intra_path = args.intra_weights or W.default_path("learned-intra")
    model, intra_sha = W.load_intra_model(intra_path, "cpu")
    shard = tuple(int(v) for v in args.shard.split("/"))
    train_files, unrelated_files, val_files, sets = build_cache(args, model, intra_sha, shard)
    if args.cache_only:
        return 0
    missing = [f for f in train_files + unrelated_files + val_files if not f.is_file()]
    if missing:  # another shard's part: build it here
        train_files, unrelated_files, val_files, sets = build_cache(args, model, intra_sha)
    del model
    base = {"codec": "learned-intra", "sha256": intra_sha}
    task = SideInfoTask(_load(train_files), _load(unrelated_files, (0,)), _load(val_files),
                        base, sets)
    print(f"{len(task.related)} views, {len(task.unrelated)} unrelated, {len(task.val)} "
          f"validation views", flush=True)
    cfg = {k: getattr(args, k) for k in ("steps", "crop", "batch", "unrelated", "lr", "warmup",
                                         "decay_at", "decay_factor", "time_limit", "decay_time",
                                         "clip", "threads",
                                         "val_every", "ckpt_every", "log_every", "seed", "qs")}
    cfg.update({"run_dir": args.run_dir, "commands": [cmd], "given": given(args),
                "arch": {"channels": args.channels, "layers": args.layers, "base": base}})
    out = loop.run(task, cfg)
    print(f"stopped at step {out['step']}")
    return 0 if math.isfinite(out.get("last", {}).get("loss", 0.0)) else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""`python -m codecflow.training.stereo` (`codecflow train stereo`): train, resume, export
learned-stereo's conditional latent coder on cached latents, the intra transforms frozen (see
docs/training.md).

    python -m codecflow.training.stereo --run-dir runs/stereo --threads 1     # train / resume
    python -m codecflow.training.stereo --run-dir runs/stereo --export weights/learned_stereo.pt

The first call codes every training pair's left view with the learned-intra weights and caches
(right latent, condition) examples in the run folder (`stereo_data.latent_examples`); later
calls reuse the cache while the intra weights, the pairs and the settings are unchanged.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from codecflow.training import conditional_cli as cli
from codecflow.training.datasets import default_data_root

VAL_QS = [16, 48]
CACHE_VERSION = 3  # 2: conditions from the analysis of the aligned decoded picture;
#                   3: aligned by the rate-constrained disparity search


def add_arguments(p: argparse.ArgumentParser) -> None:
    root = default_data_root()
    p.add_argument("--stereo", default=str(root / "stereo"),
                   help="folder of NAME_L / NAME_R pairs (default ../shared/data/stereo)")
    p.add_argument("--photos", default=str(root / "images" / "train"),
                   help="photos to synthesise pairs from (default ../shared/data/images/train)")
    p.add_argument("--synth", type=int, default=160, help="synthetic pairs (0: none)")
    p.add_argument("--synth-qs", type=int, default=2, help="q values per synthetic pair")
    cli.add_common_arguments(p, "runs/stereo")


def build_examples(args, intra, intra_sha: str, run_dir: Path) -> tuple:
    """-> (train ys, train cs, validation [(y, c, intra bytes)], data sets)."""
    from codecflow.training.latents import cache_key, cached_arrays
    from codecflow.training.stereo_data import (
        latent_examples, read_rgb, split_pairs, synthesise_pair)

    train_pairs, val_pairs = split_pairs(args.stereo) if Path(args.stereo).is_dir() else ([], [])
    photos = sorted(p for p in Path(args.photos).glob("*") if p.is_file()) \
        if args.synth and Path(args.photos).is_dir() else []
    sets = ([f"{args.stereo} ({len(train_pairs)} pairs; {len(val_pairs)} held out)"]
            if train_pairs else []) + \
           ([f"{args.photos} ({min(args.synth, len(photos))} synthetic pairs)"] if photos else [])
    if not train_pairs and not photos:
        raise SystemExit(f"no training data: no stereo pairs under {args.stereo} and no photos "
                         f"under {args.photos}")

    def pair_id(p):
        return [p[0], Path(p[1]).stat().st_size, Path(p[2]).stat().st_size]

    def compute_train():
        out: dict = {}
        t0 = time.time()
        for i, (name, lp, rp) in enumerate(train_pairs):
            cli.add(out, latent_examples(intra, read_rgb(lp), read_rgb(rp), args.qs))
            print(f"  real pair {i + 1}/{len(train_pairs)} {name} ({time.time() - t0:.0f} s)",
                  flush=True)
        rng = np.random.default_rng(args.seed)
        for i, path in enumerate(photos[:args.synth]):
            left, right = synthesise_pair(read_rgb(str(path)), rng)
            qs = sorted(rng.choice(args.qs, size=min(args.synth_qs, len(args.qs)),
                                   replace=False).tolist())
            cli.add(out, latent_examples(intra, left, right, qs))
            if (i + 1) % 20 == 0:
                print(f"  synthetic pair {i + 1}/{min(args.synth, len(photos))} "
                      f"({time.time() - t0:.0f} s)", flush=True)
        return out

    def compute_val():
        out: dict = {}
        for name, lp, rp in val_pairs:
            cli.add(out, latent_examples(intra, read_rgb(lp), read_rgb(rp), VAL_QS,
                                         intra_bytes=True))
        return out

    common = dict(intra=intra_sha, qs=list(args.qs), version=CACHE_VERSION)
    tr = cached_arrays(run_dir / "cache", "train", cache_key(
        **common, pairs=[pair_id(p) for p in train_pairs],
        photos=[p.name for p in photos[:args.synth]], synth_qs=args.synth_qs,
        seed=args.seed), compute_train)
    va = cached_arrays(run_dir / "cache", "val", cache_key(
        **common, pairs=[pair_id(p) for p in val_pairs], val_qs=VAL_QS), compute_val) \
        if val_pairs else {}
    val = list(zip(va.get("y", []), va.get("c", []),
                   [int(b[0]) for b in va.get("intra_bytes", [])]))
    return tr["y"], tr["c"], val, sets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m codecflow.training.stereo",
                                description="train / resume / export learned-stereo")
    add_arguments(p)
    return run(p.parse_args(argv))


def run(args) -> int:
    from codecflow.codecs.learned.stereo import C_FRAC

    return cli.run(args, "learned-stereo", C_FRAC, build_examples,
                   cli.command("codecflow.training.stereo", "stereo"))


if __name__ == "__main__":
    sys.exit(main())

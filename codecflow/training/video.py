"""`python -m codecflow.training.video` (`codecflow train video`): train, resume, export
learned-video's P-frame coder on cached latents, the intra transforms frozen (see
docs/training.md).

    python -m codecflow.training.video --run-dir runs/video --threads 1       # train / resume
    python -m codecflow.training.video --run-dir runs/video --export weights/learned_video.pt

The first call codes frame pairs of the training clips (and synthetic pans of photos) and caches
(frame latent, moved previous latent) examples in the run folder; later calls reuse the cache.
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
CACHE_VERSION = 2  # 2: conditions from the analysis of the motion-compensated picture


def add_arguments(p: argparse.ArgumentParser) -> None:
    root = default_data_root()
    p.add_argument("--video", default=str(root / "video"),
                   help="folder of clips (default ../shared/data/video)")
    p.add_argument("--photos", default=str(root / "images" / "train"),
                   help="photos for synthetic motion (default ../shared/data/images/train)")
    p.add_argument("--frames", type=int, default=33, help="frames read per clip")
    p.add_argument("--every", type=int, default=2,
                   help="take the pair (t-1, t) at every N-th t")
    p.add_argument("--max-side", type=int, default=640, help="downscale clips to this long side")
    p.add_argument("--synth", type=int, default=120, help="synthetic pans (0: none)")
    p.add_argument("--pair-qs", type=int, default=2, help="q values per pair")
    cli.add_common_arguments(p, "runs/video")


def build_examples(args, intra, intra_sha: str, run_dir: Path) -> tuple:
    from codecflow.training.latents import cache_key, cached_arrays
    from codecflow.training.stereo_data import read_rgb
    from codecflow.training.video_data import (
        read_clip, split_clips, synthesise_motion, video_examples)

    train, val = split_clips(args.video)
    photos = sorted(p for p in Path(args.photos).glob("*") if p.is_file()) \
        if args.synth and Path(args.photos).is_dir() else []
    sets = ([f"{args.video} ({len(train)} clips, first {args.frames} frames; "
             f"{len(val)} held out)"] if train else []) + \
           ([f"{args.photos} ({min(args.synth, len(photos))} synthetic pans)"] if photos else [])
    if not train and not photos:
        raise SystemExit(f"no training data: no clips under {args.video} and no photos under "
                         f"{args.photos}")

    def qs_for(rng):
        return sorted(rng.choice(args.qs, size=min(args.pair_qs, len(args.qs)),
                                 replace=False).tolist())

    def compute_train():
        out: dict = {}
        rng = np.random.default_rng(args.seed)
        t0 = time.time()
        for i, clip in enumerate(train):
            frames = read_clip(clip, args.frames, args.max_side)
            for t in range(1, len(frames), args.every):
                cli.add(out, video_examples(intra, frames[t - 1], frames[t], qs_for(rng)))
            print(f"  clip {i + 1}/{len(train)} {Path(clip).name} ({time.time() - t0:.0f} s)",
                  flush=True)
        for i, path in enumerate(photos[:args.synth]):
            prev, cur = synthesise_motion(read_rgb(str(path)), rng)
            cli.add(out, video_examples(intra, prev, cur, qs_for(rng)))
            if (i + 1) % 40 == 0:
                print(f"  synthetic pan {i + 1}/{min(args.synth, len(photos))} "
                      f"({time.time() - t0:.0f} s)", flush=True)
        return out

    def compute_val():
        out: dict = {}
        for clip in val:
            frames = read_clip(clip, 9, args.max_side)
            for t in range(1, len(frames), 4):
                cli.add(out, video_examples(intra, frames[t - 1], frames[t], VAL_QS,
                                            intra_bytes=True))
        return out

    def clip_id(c):
        return [Path(c).name, Path(c).stat().st_size]

    common = dict(intra=intra_sha, qs=list(args.qs), version=CACHE_VERSION,
                  max_side=args.max_side)
    tr = cached_arrays(run_dir / "cache", "train", cache_key(
        **common, clips=[clip_id(c) for c in train], frames=args.frames, every=args.every,
        photos=[p.name for p in photos[:args.synth]], pair_qs=args.pair_qs, seed=args.seed),
        compute_train)
    va = cached_arrays(run_dir / "cache", "val", cache_key(
        **common, clips=[clip_id(c) for c in val]), compute_val) if val else {}
    val_items = list(zip(va.get("y", []), va.get("c", []),
                         [int(b[0]) for b in va.get("intra_bytes", [])]))
    return tr["y"], tr["c"], val_items, sets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m codecflow.training.video",
                                description="train / resume / export learned-video")
    add_arguments(p)
    return run(p.parse_args(argv))


def run(args) -> int:
    from codecflow.codecs.learned.video import C_FRAC

    return cli.run(args, "learned-video", C_FRAC, build_examples,
                   cli.command("codecflow.training.video", "video"))


if __name__ == "__main__":
    sys.exit(main())

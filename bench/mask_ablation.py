#!/usr/bin/env python3
"""Mask ablation of learned-video's P-frame coder on held-out clips, at one q.

For frame pairs (t-1, t) of the validation clips (`training.video_data.split_clips`), frame
t-1 is coded as learned-intra codes it and frame t as a P-frame against it, three ways with
the shipped weights: the learned mask, the mask fixed at 0 (pure conditional coding of y) and
at 1 (pure conditional residual coding of y - p). Bytes are those of the real rANS strings
(the motion field included); learned-intra's bytes for frame t are the reference. The fixed
masks are applied to the coder trained with the learned mask (no retraining): the table says
what the learned mask contributes to this model, not what separately trained variants reach.

Prints a table, writes bench/results/mask_ablation.{json,md}.
    python bench/mask_ablation.py [--q 32] [--pairs-per-clip 4]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import torch

    from codecflow.codecs.learned import weights as W
    from codecflow.codecs.learned.conditioned import C_FRAC
    from codecflow.codecs.learned.intra import encode_rgb_latent
    from codecflow.codecs.learned.video import encode_p
    from codecflow.training.video_data import read_clip, split_clips

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--q", type=int, default=32)
    ap.add_argument("--pairs-per-clip", type=int, default=4)
    ap.add_argument("--video", default=str(ROOT.parent / "shared/data/video"))
    ap.add_argument("--out", default=str(ROOT / "bench/results/mask_ablation"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    _, val = split_clips(args.video)
    if not val:
        print(f"no held-out clips under {args.video}", file=sys.stderr)
        return 2
    intra, sha = W.load_intra_model(None)
    coder, csha = W.load_model(W.default_path("learned-video"), "cpu", "learned-video")
    ex = coder.exact(C_FRAC)
    totals = {"learned mask": 0, "m = 0 (conditional)": 0, "m = 1 (residual)": 0,
              "learned-intra": 0}
    n = 0
    for clip in val:
        frames = read_clip(clip, 2 * args.pairs_per_clip + 1, max_side=10 ** 6)
        for t in range(1, len(frames), 2):
            _, ref, _ = encode_rgb_latent(intra, frames[t - 1], args.q)
            totals["learned-intra"] += len(encode_rgb_latent(intra, frames[t], args.q)[0])
            for name, m in (("learned mask", None), ("m = 0 (conditional)", 0.0),
                            ("m = 1 (residual)", 1.0)):
                ex.mask_override = m
                totals[name] += len(encode_p(intra, coder, frames[t], args.q, ref)[0])
            ex.mask_override = None
            n += 1
    lines = [f"# Mask ablation, learned-video P-frames, q {args.q}, {n} frame pairs of "
             f"{len(val)} held-out clips", "",
             "| coding | bytes | vs learned-intra |", "|---|---|---|"]
    for name, b in totals.items():
        lines.append(f"| {name} | {b} | {100 * (b / totals['learned-intra'] - 1):+.1f} % |")
    md = "\n".join(lines) + "\n"
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"q": args.q, "pairs": n, "clips": [Path(c).name for c in val], "bytes": totals,
         "weights": csha[:12]}, indent=2))
    out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

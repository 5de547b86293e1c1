#!/usr/bin/env python3
"""How much can a decoder gain from the other view when each view is coded alone?

    python bench/side_info_bound.py [--q 8,24,40,56] [--side-q 56] [--max-pairs 8]

For each held-out stereo pair (the stereo training split's validation pairs, each cropped to at
most 640 pixels wide), both views are coded with learned-intra (real payloads; the decoded
pictures are the encoder's exact reconstructions). Each decoded view is then fused with the
other decoded view, moved by per-pixel block matching (9x9 SAD, horizontal disparity 0..96):

- ``fused``: out = view + w (moved other - view), w = w_max exp(-cost / tau), for a small grid
  of (tau, w_max): what a training-free fusion gains;
- ``oracle``: per 16x16 block the best of w in {0, 0.25, 0.5, 0.75, 1} chosen *with the
  original picture*: an upper bound for any fusion that blends the two aligned pictures.

Gains are PSNR-RGB dB over the plain decode, mean over views. ``--side-q N`` codes the side view
at q N instead of the same q (asymmetric coding). Writes bench/results/side_info_bound.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from codecflow.codecs.metrics import psnr  # noqa: E402

MAX_DISPARITY = 96
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
GRID = ((10.0, 0.5), (20.0, 0.5), (20.0, 1.0))



def match(target: np.ndarray, side: np.ndarray, sign: int, k: int = 9) -> tuple:
    """For every pixel of ``target`` the side picture moved by the horizontal shift d in
    0..MAX_DISPARITY (side(x + sign d)) with the least k x k mean absolute difference.
    Returns (moved side picture, its cost)."""
    import cv2

    t, s = target.astype(np.float32), side.astype(np.float32)
    h, w = t.shape[:2]
    best = np.full((h, w), np.inf, np.float32)
    moved_best = t.copy()
    for d in range(min(MAX_DISPARITY, w - 1) + 1):
        moved = np.empty_like(s)
        if sign > 0:
            moved[:, :w - d] = s[:, d:]
            moved[:, w - d:] = s[:, w - 1:w]
        else:
            moved[:, d:] = s[:, :w - d]
            moved[:, :d] = s[:, :1]
        cost = cv2.boxFilter(np.abs(t - moved).sum(2), -1, (k, k),
                             borderType=cv2.BORDER_REFLECT)
        better = cost < best
        best[better] = cost[better]
        moved_best[better] = moved[better]
    return moved_best, best


def blend(target: np.ndarray, moved: np.ndarray, w) -> np.ndarray:
    t = target.astype(np.float32)
    return np.clip(np.round(t + w * (moved - t)), 0, 255)


def oracle_gain(target: np.ndarray, moved: np.ndarray, original: np.ndarray,
                block: int = 16) -> float:
    errs = [((blend(target, moved, w) - original) ** 2).astype(np.float64) for w in WEIGHTS]
    h, w_ = target.shape[:2]
    best = np.zeros_like(errs[0])
    for y in range(0, h, block):
        for x in range(0, w_, block):
            i = int(np.argmin([e[y:y + block, x:x + block].sum() for e in errs]))
            best[y:y + block, x:x + block] = errs[i][y:y + block, x:x + block]
    return float(10 * np.log10(errs[0].mean() / max(best.mean(), 1e-12)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stereo", default=str(ROOT.parent / "shared" / "data" / "stereo"))
    ap.add_argument("--q", default="8,24,40,56")
    ap.add_argument("--side-q", type=int, default=None, help="the side view's q (default: same)")
    ap.add_argument("--max-pairs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "side_info_bound.json"))
    a = ap.parse_args(argv)
    import torch

    from codecflow.codecs.learned import weights as W
    from codecflow.codecs.learned.intra import encode_rgb
    from codecflow.training.stereo_data import read_rgb, split_pairs

    torch.set_num_threads(a.threads)
    if not Path(a.stereo).is_dir():
        print(f"error: no stereo folder at {a.stereo}", file=sys.stderr)
        return 2
    pairs = split_pairs(a.stereo)[1][:a.max_pairs]
    model, sha = W.load_intra_model(W.default_path("learned-intra"), "cpu")
    qs = [int(v) for v in a.q.split(",") if v.strip()]
    rows = []
    t0 = time.perf_counter()
    for name, lp, rp in pairs:
        views = []
        for p in (lp, rp):
            im = read_rgb(p)
            x0 = max(0, (im.shape[1] - 640) // 2)
            views.append(np.ascontiguousarray(im[:, x0:x0 + 640]))
        decoded = {}

        def dec(v: int, q: int) -> tuple:
            if (v, q) not in decoded:
                payload, rec = encode_rgb(model, views[v], q)
                decoded[(v, q)] = (rec, len(payload))
            return decoded[(v, q)]

        for q in qs:
            side_q = q if a.side_q is None else a.side_q
            for v, sign in ((0, -1), (1, +1)):
                target, nbytes = dec(v, q)
                side, side_bytes = dec(1 - v, side_q)
                moved, cost = match(target, side, sign)
                base = psnr(target, views[v])
                row = {"pair": name, "view": "LR"[v], "q": q, "side_q": side_q,
                       "bpp": nbytes * 8 / target.shape[0] / target.shape[1],
                       "psnr_rgb": base,
                       "oracle_gain_db": oracle_gain(target, moved, views[v])}
                for tau, wmax in GRID:
                    w = wmax * np.exp(-cost / tau)[..., None]
                    row[f"fused_gain_db_tau{tau:g}_w{wmax:g}"] = (
                        psnr(blend(target, moved, w), views[v]) - base)
                rows.append(row)
        print(f"{name}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    keys = ["oracle_gain_db"] + [f"fused_gain_db_tau{t:g}_w{w:g}" for t, w in GRID]
    summary = []
    print(f"\n{'q':>3} {'side q':>6} {'views':>5} {'bpp':>6} {'PSNR':>6} "
          + " ".join(f"{k.replace('_gain_db', ''):>16s}" for k in keys))
    for q in qs:
        sel = [r for r in rows if r["q"] == q]
        s = {"q": q, "side_q": sel[0]["side_q"], "views": len(sel),
             "bpp": float(np.mean([r["bpp"] for r in sel])),
             "psnr_rgb": float(np.mean([r["psnr_rgb"] for r in sel])),
             **{k: float(np.mean([r[k] for r in sel])) for k in keys}}
        summary.append(s)
        print(f"{q:3d} {s['side_q']:6d} {s['views']:5d} {s['bpp']:6.3f} {s['psnr_rgb']:6.2f} "
              + " ".join(f"{s[k]:+16.3f}" for k in keys))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"weights_sha256": sha, "pairs": [p[0] for p in pairs],
                                       "summary": summary, "rows": rows}, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

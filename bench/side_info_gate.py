#!/usr/bin/env python3
"""learned-stereo-si's decoder on held-out views: the gain with the true other view, and what an
unrelated side view costs.

    python bench/side_info_gate.py [--q 0,32,63] [--weights W]

For each held-out stereo pair (the stereo split's validation pairs, whole pictures), both views
are coded with learned-intra at each q (real payloads; the decoded pictures are every
decoder's). Each decoded view is refined by learned-stereo-si's decoder (alignment, gate,
integer refiner) with:

- ``partner``: the pair's other decoded view (what the codec does);
- ``kodak``: a Kodak picture coded at the same q, resized to the view's size;
- ``other pair``: the other view of another held-out pair, resized.

PSNR-RGB change over the plain decode, dB (mean and worst over views), and how often the gate
let the side view in. The issue's rule: an unrelated side view never costs more than 0.1 dB.
Writes bench/results/side_info_gate.json.
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

KINDS = ("partner", "kodak", "other pair")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stereo", default=str(ROOT.parent / "shared" / "data" / "stereo"))
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared" / "data" / "images" / "kodak"))
    ap.add_argument("--q", default="0,32,63")
    ap.add_argument("--weights", default=None, help="learned-stereo-si weights (default: shipped)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "side_info_gate.json"))
    a = ap.parse_args(argv)
    import cv2
    import torch

    from codecflow.codecs.learned import weights as W
    from codecflow.codecs.learned.intra import encode_rgb
    from codecflow.codecs.learned.stereo_si import VIEWS, SideInfoDecoder
    from codecflow.training.stereo_data import read_rgb, split_pairs

    torch.set_num_threads(a.threads)
    kodak = sorted(Path(a.kodak).glob("*.png")) if Path(a.kodak).is_dir() else []
    if not Path(a.stereo).is_dir() or not kodak:
        print(f"error: need stereo pairs under {a.stereo} and Kodak pictures under {a.kodak}",
              file=sys.stderr)
        return 2
    pairs = split_pairs(a.stereo)[1]
    intra, intra_sha = W.load_intra_model(W.default_path("learned-intra"), "cpu")
    side = SideInfoDecoder(intra_sha, "cpu", a.weights)
    qs = [int(v) for v in a.q.split(",") if v.strip()]
    views = [[read_rgb(p) for p in (lp, rp)] for _, lp, rp in pairs]
    rows, t0 = [], time.perf_counter()
    for q in qs:
        dec = [[encode_rgb(intra, v, q)[1] for v in pv] for pv in views]
        for i, (name, _, _) in enumerate(pairs):
            for v in (0, 1):
                target, orig = dec[i][v], views[i][v]
                h, w = target.shape[:2]
                k = read_rgb(kodak[(2 * i + v) % len(kodak)])
                k = cv2.resize(k, (w, h), interpolation=cv2.INTER_AREA)
                j = (i + 1 + v) % len(pairs)
                sides = {"partner": dec[i][1 - v],
                         "kodak": encode_rgb(intra, k, q)[1],
                         "other pair": cv2.resize(dec[j][1 - v], (w, h),
                                                  interpolation=cv2.INTER_AREA)}
                base = psnr(target, orig)
                row = {"pair": name, "view": VIEWS[v], "q": q, "psnr_plain": base}
                for kind, other in sides.items():
                    out, status = side.refine(target, other, q, VIEWS[v])
                    row[kind] = {"gain_db": psnr(out, orig) - base, "status": status}
                rows.append(row)
        print(f"q {q}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = []
    print(f"\n{'q':>3} {'views':>5} " + " ".join(f"{k + ' mean':>17s} {k + ' worst':>18s} "
                                                  f"{'used':>5s}" for k in KINDS))
    for q in qs:
        sel = [r for r in rows if r["q"] == q]
        s = {"q": q, "views": len(sel)}
        for kind in KINDS:
            g = [r[kind]["gain_db"] for r in sel]
            s[kind] = {"mean_gain_db": float(np.mean(g)), "worst_gain_db": float(np.min(g)),
                       "refined": sum(r[kind]["status"] == "refined" for r in sel)}
        summary.append(s)
        print(f"{q:3d} {len(sel):5d} " + " ".join(
            f"{s[k]['mean_gain_db']:+17.3f} {s[k]['worst_gain_db']:+18.3f} "
            f"{s[k]['refined']:5d}" for k in KINDS))
    worst = min(s[k]["worst_gain_db"] for s in summary for k in KINDS[1:])
    print(f"\nworst change with an unrelated side view: {worst:+.3f} dB (rule: >= -0.1)")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"weights_sha256": side.sha, "intra_sha256": intra_sha,
                                       "pairs": [p[0] for p in pairs], "summary": summary,
                                       "worst_unrelated_gain_db": worst, "rows": rows},
                                      indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Rate/quality points of a learned-intra weights file on Kodak, and where its transforms cap.

    python bench/intra_points.py --weights runs_export.pt [--q 0,21,42,63] [--images 24]
    python bench/intra_points.py --weights weights/learned_intra.pt --refine-steps 60 \
        --skip 2 --images 6 --no-cap --baseline bench/results/intra_points_base.json

For each q, every picture is really coded and decoded (exact decoder): bpp from the payload's
bytes, PSNR-RGB of the decoded picture (mean over pictures). Then, at the rate position of
each q, the transforms' ceiling: the PSNR of g_s(g_a(x)) with the latent *unquantised*, next to
the same with the latent rounded (float forward pass, no entropy coding). When the unquantised
PSNR at the top q is not well above the target, more rate cannot reach the target: the
analysis/synthesis pair needs training or width. Quicker than bench/kodak_pipeline_rd.py (no
pipeline, no YUV); use that one for the numbers an issue's bar names.

``--refine-steps N`` codes with the encoder-side latent search (learned-intra's
``refine_steps``); ``--baseline JSON`` (an earlier run of this script on the same pictures)
adds the BD-rate and BD-PSNR of this run against it.

Writes bench/results/intra_points.json (or --out).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from codecflow.codecs.metrics import psnr  # noqa: E402



def coded_point(model, images: list, q: int, refine_steps: int = 0) -> dict:
    from codecflow.codecs.learned.intra import decode_rgb, encode_rgb

    bpp, quality = [], []
    for im in images:
        payload, recon = encode_rgb(model, im, q, refine_steps)
        out = decode_rgb(model, payload)
        if not np.array_equal(out, recon):
            raise SystemExit("the decoder's picture differs from the encoder's reconstruction")
        bpp.append(len(payload) * 8 / (im.shape[0] * im.shape[1]))
        quality.append(psnr(out, im))
    return {"q": q, "bpp": float(np.mean(bpp)), "psnr_rgb": float(np.mean(quality))}


def transform_cap(model, images: list, q: int) -> dict:
    import torch

    pos = torch.tensor([model.q_to_pos(q)])
    unq, rnd = [], []
    with torch.no_grad():
        g, ig = model.gains(pos)
        for im in images:
            x = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float() / 255
            y = model.g_a(model.pad(x)) * g
            h, w = im.shape[:2]
            for latent, acc in ((y, unq), (torch.round(y), rnd)):
                xr = model.g_s(latent * ig)[..., :h, :w].clamp(0, 1)
                acc.append(psnr((xr[0].permute(1, 2, 0).numpy() * 255).round(), im))
    return {"q": q, "unquantised_psnr_rgb": float(np.mean(unq)),
            "rounded_psnr_rgb": float(np.mean(rnd))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True, help="a learned-intra weights file")
    ap.add_argument("--q", default="0,21,42,63", help="comma-separated q values")
    ap.add_argument("--images", type=int, default=24, help="N Kodak pictures (in name order)")
    ap.add_argument("--skip", type=int, default=0, help="after skipping the first K")
    ap.add_argument("--refine-steps", type=int, default=0,
                    help="encoder-side latent search steps (0: the analysis's latent)")
    ap.add_argument("--no-cap", action="store_true", help="skip the transforms' ceiling")
    ap.add_argument("--baseline", default=None,
                    help="JSON of an earlier run on the same pictures: report BD against it")
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared" / "data" / "images" / "kodak"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "intra_points.json"))
    a = ap.parse_args(argv)
    import cv2
    import torch

    from codecflow.codecs.learned import weights as W

    if a.threads:
        torch.set_num_threads(a.threads)
    files = sorted(glob.glob(str(Path(a.kodak) / "*.png")))[a.skip:a.skip + a.images]
    if not files:
        print(f"error: no PNG pictures in {a.kodak}", file=sys.stderr)
        return 2
    images = [np.ascontiguousarray(cv2.imread(f, cv2.IMREAD_COLOR)[..., ::-1]) for f in files]
    model, sha = W.load_intra_model(a.weights, "cpu")
    qs = [int(v) for v in a.q.split(",") if v.strip()]
    rows = []
    print(f"{a.weights} (sha256 {sha[:12]}), {len(images)} Kodak pictures")
    print(f"{'q':>3} {'bpp':>7} {'PSNR-RGB':>9} {'unquantised':>12} {'rounded':>8} {'s':>5}")
    for q in qs:
        t0 = time.perf_counter()
        row = coded_point(model, images, q, a.refine_steps)
        row.update({"unquantised_psnr_rgb": float("nan"), "rounded_psnr_rgb": float("nan")}
                   if a.no_cap else transform_cap(model.float(), images, q))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"{q:3d} {row['bpp']:7.3f} {row['psnr_rgb']:9.2f} "
              f"{row['unquantised_psnr_rgb']:12.2f} {row['rounded_psnr_rgb']:8.2f} "
              f"{row['seconds']:5.0f}", flush=True)
    result = {"weights": str(a.weights), "sha256": sha, "pictures": [Path(f).stem for f in files],
              "refine_steps": a.refine_steps, "rows": rows}
    if a.baseline:
        from codecflow.eval import bdrate

        base = json.loads(Path(a.baseline).read_text())
        if base.get("pictures") != result["pictures"]:
            print("error: the baseline was measured on other pictures", file=sys.stderr)
            return 2
        ref = ([r["bpp"] for r in base["rows"]], [r["psnr_rgb"] for r in base["rows"]])
        new = ([r["bpp"] for r in rows], [r["psnr_rgb"] for r in rows])
        result["vs_baseline"] = {"bd_rate_pct": bdrate.bd_rate(*ref, *new),
                                 "bd_psnr_db": bdrate.bd_psnr(*ref, *new)}
        print(f"vs {a.baseline}: BD-rate {result['vs_baseline']['bd_rate_pct']:+.2f} %, "
              f"BD-PSNR {result['vs_baseline']['bd_psnr_db']:+.3f} dB")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

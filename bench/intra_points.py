#!/usr/bin/env python3
"""Rate/quality points of a learned-intra weights file on Kodak, and where its transforms cap.

    python bench/intra_points.py --weights runs_export.pt [--q 0,21,42,63] [--images 24]

For each q, every picture is really coded and decoded (exact decoder): bpp from the payload's
bytes, PSNR-RGB of the decoded picture (mean over pictures). Then, at the rate position of
each q, the transforms' ceiling: the PSNR of g_s(g_a(x)) with the latent *unquantised*, next to
the same with the latent rounded (float forward pass, no entropy coding). When the unquantised
PSNR at the top q is not well above the target, more rate cannot reach the target: the
analysis/synthesis pair needs training or width. Quicker than bench/kodak_pipeline_rd.py (no
pipeline, no YUV); use that one for the numbers an issue's bar names.

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


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def coded_point(model, images: list, q: int) -> dict:
    from codecflow.codecs.learned.intra import decode_rgb, encode_rgb

    bpp, psnr = [], []
    for im in images:
        payload, recon = encode_rgb(model, im, q)
        out = decode_rgb(model, payload)
        if not np.array_equal(out, recon):
            raise SystemExit("the decoder's picture differs from the encoder's reconstruction")
        bpp.append(len(payload) * 8 / (im.shape[0] * im.shape[1]))
        psnr.append(_psnr(out, im))
    return {"q": q, "bpp": float(np.mean(bpp)), "psnr_rgb": float(np.mean(psnr))}


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
                acc.append(_psnr((xr[0].permute(1, 2, 0).numpy() * 255).round(), im))
    return {"q": q, "unquantised_psnr_rgb": float(np.mean(unq)),
            "rounded_psnr_rgb": float(np.mean(rnd))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True, help="a learned-intra weights file")
    ap.add_argument("--q", default="0,21,42,63", help="comma-separated q values")
    ap.add_argument("--images", type=int, default=24, help="first N Kodak pictures")
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared" / "data" / "images" / "kodak"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "intra_points.json"))
    a = ap.parse_args(argv)
    import cv2
    import torch

    from codecflow.codecs.learned import weights as W

    if a.threads:
        torch.set_num_threads(a.threads)
    files = sorted(glob.glob(str(Path(a.kodak) / "*.png")))[:a.images]
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
        row = {**coded_point(model, images, q), **transform_cap(model.float(), images, q)}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"{q:3d} {row['bpp']:7.3f} {row['psnr_rgb']:9.2f} "
              f"{row['unquantised_psnr_rgb']:12.2f} {row['rounded_psnr_rgb']:8.2f} "
              f"{row['seconds']:5.0f}", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"weights": str(a.weights), "sha256": sha,
                                       "images": len(images), "rows": rows}, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

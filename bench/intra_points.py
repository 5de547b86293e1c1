#!/usr/bin/env python3
"""Rate/quality points of a learned-intra weights file on Kodak, and where its transforms cap.

    python bench/intra_points.py --weights runs_export.pt [--q 0,21,42,63] [--images 24]
    python bench/intra_points.py --weights weights/learned_intra.pt --refine-steps 20 \
        --skip 2 --images 6 --no-cap --baseline bench/results/intra_points_base.json
    python bench/intra_points.py --weights weights/learned_intra.pt --clips ../shared/data/video \
        --oversampled --q 0,8,16,24,32,48,63 --out bench/results/intra_points_clips_oversampled.json

For each q, every picture is really coded and decoded (exact decoder): bpp from the payload's
bytes, PSNR-RGB of the decoded picture (mean over pictures). Then, at the rate position of
each q, the transforms' ceiling: the PSNR of g_s(g_a(x)) with the latent *unquantised*, next to
the same with the latent rounded (float forward pass, no entropy coding). When the unquantised
PSNR at the top q is not well above the target, more rate cannot reach the target: the
analysis/synthesis pair needs training or width. Quicker than bench/kodak_pipeline_rd.py (no
pipeline, no YUV); use that one for the numbers an issue's bar names.

``--oversampled`` codes in learned-intra's oversampled mode (the picture at 2x, integer 2x2
means at the decoder; with the mode's own model when ``NAME_2x.pt`` sits beside the
weights); ``--clips DIR`` measures on held-out pictures instead of Kodak: that is how the
switches between the two modes (`coding_choices` in intra.py) were chosen.

``--codec-q`` takes q as the codec's q, coded as learned-intra codes it in the pipeline.

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



def coded_point(model, images: list, q: int, refine_steps: int = 0,
                oversampled: bool = False, codec_q: bool = False) -> dict:
    from codecflow.codecs.learned.intra import decode_rgb, encode_best, encode_rgb

    bpp, quality = [], []
    for im in images:
        if codec_q:
            payload, recon = encode_best(model, im, q, refine_steps)
        else:
            payload, recon = encode_rgb(model, im, q, refine_steps, oversampled)
        out = decode_rgb(model, payload)
        if not np.array_equal(out, recon):
            raise SystemExit("the decoder's picture differs from the encoder's reconstruction")
        bpp.append(len(payload) * 8 / (im.shape[0] * im.shape[1]))
        quality.append(psnr(out, im))
    return {"q": q, "bpp": float(np.mean(bpp)), "psnr_rgb": float(np.mean(quality))}


def middle_frame(path: str, max_w: int = 768, max_h: int = 512) -> np.ndarray:
    """The middle frame of a clip (PyAV), RGB, centre-cropped to at most max_w x max_h."""
    import av

    with av.open(path) as c:
        frames = list(c.decode(video=0))
        im = frames[len(frames) // 2].to_ndarray(format="rgb24")
    h, w = im.shape[:2]
    ch, cw = min(h, max_h), min(w, max_w)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(im[y0:y0 + ch, x0:x0 + cw])


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
    ap.add_argument("--pictures", default=None, metavar="NAMES",
                    help="these Kodak pictures instead (comma-separated, e.g. the validation "
                         "split kodim01,kodim04,kodim07,kodim14,kodim19,kodim23)")
    ap.add_argument("--refine-steps", type=int, default=0,
                    help="encoder-side latent search steps (0: the analysis's latent)")
    ap.add_argument("--no-cap", action="store_true", help="skip the transforms' ceiling")
    ap.add_argument("--baseline", default=None,
                    help="JSON of an earlier run on the same pictures: report BD against it")
    ap.add_argument("--oversampled", action="store_true",
                    help="code every q in the oversampled mode (the picture at 2x; q is the "
                         "model's rate point, as in the payload)")
    ap.add_argument("--codec-q", action="store_true",
                    help="q is the codec's q: code as learned-intra does in the pipeline "
                         "(`coding_choices`: the oversampled mode where it pays)")
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared" / "data" / "images" / "kodak"))
    ap.add_argument("--clips", default=None, metavar="DIR",
                    help="instead of Kodak: the middle frame of every .mkv/.mp4 clip in DIR, "
                         "centre-cropped to at most 768x512 (pictures the image model never "
                         "trains on: it uses only the raw .yuv clips)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "intra_points.json"))
    a = ap.parse_args(argv)
    import cv2
    import torch

    from codecflow.codecs.learned import weights as W

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.clips:
        files = sorted(f for ext in ("mkv", "mp4") for f in glob.glob(f"{a.clips}/*.{ext}"))
        files = files[a.skip:a.skip + a.images]
        images = [middle_frame(f) for f in files]
        where = "clips' middle frames"
    else:
        files = sorted(glob.glob(str(Path(a.kodak) / "*.png")))[a.skip:a.skip + a.images]
        if a.pictures:
            files = [str(Path(a.kodak) / f"{n.strip()}.png") for n in a.pictures.split(",")]
            missing = [f for f in files if not Path(f).is_file()]
            if missing:
                print(f"error: no such picture: {', '.join(missing)}", file=sys.stderr)
                return 2
        images = [np.ascontiguousarray(cv2.imread(f, cv2.IMREAD_COLOR)[..., ::-1])
                  for f in files]
        where = "Kodak pictures"
    if not files:
        print(f"error: no pictures in {a.clips or a.kodak}", file=sys.stderr)
        return 2
    model, sha = W.load_intra_model(a.weights, "cpu")
    qs = [int(v) for v in a.q.split(",") if v.strip()]
    rows = []
    print(f"{a.weights} (sha256 {sha[:12]}), {len(images)} {where}"
          + (", oversampled" if a.oversampled else "") + (", codec q" if a.codec_q else ""))
    print(f"{'q':>3} {'bpp':>7} {'PSNR-RGB':>9} {'unquantised':>12} {'rounded':>8} {'s':>5}")
    for q in qs:
        t0 = time.perf_counter()
        row = coded_point(model, images, q, a.refine_steps, a.oversampled, a.codec_q)
        row.update({"unquantised_psnr_rgb": float("nan"), "rounded_psnr_rgb": float("nan")}
                   if a.no_cap or a.oversampled or a.codec_q
                   else transform_cap(model.float(), images, q))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"{q:3d} {row['bpp']:7.3f} {row['psnr_rgb']:9.2f} "
              f"{row['unquantised_psnr_rgb']:12.2f} {row['rounded_psnr_rgb']:8.2f} "
              f"{row['seconds']:5.0f}", flush=True)
    result = {"weights": str(a.weights), "sha256": sha, "pictures": [Path(f).stem for f in files],
              "refine_steps": a.refine_steps, "oversampled": a.oversampled,
              "codec_q": a.codec_q, "rows": rows}
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

#!/usr/bin/env python3
"""The training curve of learned-intra as BD-rate: every validation of a run against JPEG and
WebP on the same Kodak images.

A run's `val.jsonl` holds, every `--val-every` steps, the real compress/decompress of 6 Kodak
images (kodim01, 04, 07, 14, 19, 23) at q 0, 21, 42, 63: mean bpp from the payload bytes and
mean PSNR-RGB. This script codes the same 6 images with our JPEG and WebP codecs (the pipeline's
`create_codec`, RGB input, file bytes as rate) at the q values of kodak_pipeline_rd.py, and
prints the BD-rate (PSNR-RGB) of each validation against both. It is a cheap *proxy* for the
24-image pipeline measurement (bench/kodak_pipeline_rd.py), which is the one the issue's bar
uses: the curve shows the trend, the pipeline run gives the number.

    python bench/training_curve.py [--run-dir runs/intra] [--kodak ../shared/data/images/kodak]

Writes bench/results/training_curve.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from codecflow.eval import bdrate  # noqa: E402

ANCHOR_Q = {"jpeg": (2, 4, 8, 16, 24, 32, 40, 48, 56), "webp": (0, 2, 4, 8, 16, 24, 32, 40, 48)}


def anchor_curve(name: str, images: list) -> tuple[list, list]:
    from codecflow.data import Frame, StreamInfo
    from codecflow.codecs.registry import create_codec
    from codecflow.codecs.metrics import psnr

    rates, psnrs = [], []
    for q in ANCHOR_Q[name]:
        codec = create_codec(name, q=q)
        b, p = [], []
        for img in images:
            info = StreamInfo(width=img.shape[1], height=img.shape[0], pix_fmt="rgb24")
            payload = codec.encode_picture(Frame.rgb(img), info)
            rec = codec.decode_picture(payload, info).planes[0]
            b.append(len(payload) * 8.0 / (img.shape[0] * img.shape[1]))
            p.append(psnr(img, rec))
        rates.append(float(np.mean(b)))
        psnrs.append(float(np.mean(p)))
    return rates, psnrs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "intra"))
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared" / "data" / "images" / "kodak"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "training_curve"))
    args = ap.parse_args(argv)
    val = Path(args.run_dir) / "val.jsonl"
    if not val.is_file():
        print(f"error: no validation log at {val}", file=sys.stderr)
        return 2
    from codecflow.training.datasets import _read_rgb
    from codecflow.training.intra_task import VAL_KODAK

    images = [_read_rgb(Path(args.kodak) / n) for n in VAL_KODAK]
    if any(im is None for im in images):
        print(f"error: Kodak images {', '.join(VAL_KODAK)} not all found in {args.kodak}",
              file=sys.stderr)
        return 2
    anchors = {n: anchor_curve(n, images) for n in ANCHOR_Q}
    rows = []
    for line in val.read_text().splitlines():
        rec = json.loads(line)
        pts = sorted(rec["points"], key=lambda r: r["bpp"])
        r = [p["bpp"] for p in pts]
        q = [p["psnr_rgb"] for p in pts]
        row = {"step": rec["step"], "hours": rec["hours"], "bpp": r, "psnr_rgb": q}
        for n, (ar, aq) in anchors.items():
            row[f"bd_rate_vs_{n}"] = bdrate.bd_rate(ar, aq, r, q)
        rows.append(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"images": list(VAL_KODAK), "anchors": {n: {"q": list(ANCHOR_Q[n]), "bpp": a[0],
                                                    "psnr_rgb": a[1]}
                                                for n, a in anchors.items()},
         "validations": rows}, indent=1) + "\n")

    def pct(v):
        return "n/a" if v is None else f"{v:+.1f} %"

    print("| step | hours | q0 bpp / dB | q63 bpp / dB | BD-rate vs JPEG | vs WebP |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['step']:,} | {row['hours']:.2f} | {row['bpp'][0]:.3f} / "
              f"{row['psnr_rgb'][0]:.2f} | {row['bpp'][-1]:.3f} / {row['psnr_rgb'][-1]:.2f} | "
              f"{pct(row['bd_rate_vs_jpeg'])} | {pct(row['bd_rate_vs_webp'])} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for n in ANCHOR_Q:
            xs = [r["step"] for r in rows if r[f"bd_rate_vs_{n}"] is not None]
            ys = [r[f"bd_rate_vs_{n}"] for r in rows if r[f"bd_rate_vs_{n}"] is not None]
            ax.plot(xs, ys, "o-", label=f"vs {n}")
        ax.axhline(-35, color="grey", ls="--", lw=1, label="bar: -35 % vs JPEG")
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel("training step")
        ax.set_ylabel("BD-rate (PSNR-RGB), %")
        ax.set_title("learned-intra on 6 Kodak images (validation log)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=100)
    except ImportError:
        print("(matplotlib not installed: no plot)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

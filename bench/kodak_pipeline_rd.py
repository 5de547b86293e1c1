#!/usr/bin/env python3
"""Kodak RD through the real pipeline (the bar of the "beat WebP" issue).

For each codec and q: `run_pipeline.py configs/images.yaml` on the Kodak folder (one .cfl per
image), then `codecflow decode` of the written files with `--reference` (independent decode:
rate = .cfl bytes, PSNR-RGB of what the decoder reconstructs). The pipeline's summary PSNR must
equal the decode's; the script checks it. Points are means over the 24 images (as published
Kodak curves are). BD-rate (PSNR-RGB) against our JPEG, WebP, x265-intra, and the published
curves in ../shared/anchors/kodak.

A codec with parameters is a curve of its own: ``--codec "learned-intra[refine_steps=20]"``
runs learned-intra with ``codec.params.refine_steps=20`` and names its points so (its q values with
``--q "learned-intra[refine_steps=20]=0,12"``, else learned-intra's).

Prints a table and writes bench/results/kodak_pipeline_rd.{json,md} and kodak_pipeline_rd.png.
    python bench/kodak_pipeline_rd.py [--codec learned-intra,jpeg,webp,x265-intra] [--q ...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codecflow.eval import bdrate  # noqa: E402
from codecflow.eval.plot import load_published, plot_rd  # noqa: E402

# low q values for the anchors too, so that their curves overlap a young learned model's
# learned-intra: q 47/48 and 57/58 are the two sides of its switches to the oversampled mode
DEFAULT_Q = {"learned-intra": "0,12,24,36,47,48,52,57,58,60,63", "jpeg": "2,4,8,16,24,32,40,48,56",
             "webp": "0,2,4,8,16,24,32,40,48,56,63", "x265-intra": "0,3,6,9,12,18,24,30"}


def run(cmd: list) -> None:
    p = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")


def parse_codec(spec: str) -> tuple:
    """"name" or "name[key=value,...]" -> (name, {key: value})."""
    name, _, rest = spec.partition("[")
    params = {}
    if rest:
        if not rest.endswith("]"):
            raise SystemExit(f"--codec {spec!r}: expected NAME[KEY=VALUE,...]")
        for item in rest[:-1].split(","):
            key, eq, value = item.partition("=")
            if not (key.strip() and eq):
                raise SystemExit(f"--codec {spec!r}: expected KEY=VALUE, got {item!r}")
            params[key.strip()] = value.strip()
    return name, params


def point(codec: str, q: int, kodak: Path, work: Path, threads: int) -> dict:
    name, params = parse_codec(codec)
    out = work / f"{name}{''.join(f'_{k}{v}' for k, v in params.items())}_q{q}"
    t0 = time.time()
    run(["run_pipeline.py", "configs/images.yaml", "--set", f"source.path={kodak}",
         "--set", f"codec.name={name}", "--set", f"codec.q={q}", "--set", f"output.dir={out}",
         "--set", "output.recon=false", "--set", "stats.terminal=off", "--set", "workers=1",
         "--set", f"codec.threads={threads}",
         *(a for k, v in params.items() for a in ("--set", f"codec.params.{k}={v}"))])
    t_pipe = time.time() - t0
    js = out / "decode.json"
    t0 = time.time()
    run(["-m", "codecflow.cli", "decode", str(out), "--reference", str(kodak), "--json",
         str(js)])
    t_dec = time.time() - t0
    dec = json.loads(js.read_text())
    summ = json.loads((out / "summary.json").read_text())
    n = len(dec)
    assert n == len(summ["streams"]) == 24 or kodak.name != "kodak", n
    worst = max(abs(r["psnr_rgb"] - summ["streams"][r["stream"]]["psnr_rgb"]) for r in dec)
    if worst > 1e-9:
        raise SystemExit(f"{codec} q={q}: pipeline PSNR differs from decode by {worst}")
    return {"q": q, "images": n, "bpp": sum(r["bpp"] for r in dec) / n,
            "psnr_rgb": sum(r["psnr_rgb"] for r in dec) / n,
            "psnr_yuv": sum(r["psnr_yuv"] for r in dec) / n,
            "pipeline_s": t_pipe, "decode_s": t_dec, "summary_matches_decode": True}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="learned-intra,jpeg,webp,x265-intra")
    ap.add_argument("--q", action="append", default=[], metavar="CODEC=Q,Q,...",
                    help="q values of a codec; CODEC= (none) with --anchors-from and --merge "
                         "only recomputes the tables and the plot from the earlier points")
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared/data/images/kodak"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--anchors-from", default=None, metavar="JSON",
                    help="reuse the points of the codecs not measured now from an earlier "
                         "kodak_pipeline_rd.json (e.g. to re-measure only learned-intra)")
    ap.add_argument("--merge", action="store_true",
                    help="with --anchors-from: also keep the earlier points of the codecs "
                         "measured now at the q values not measured now (e.g. to add points to "
                         "a curve whose other points are unchanged)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/kodak_pipeline_rd"))
    args = ap.parse_args()
    kodak = Path(args.kodak)
    if not kodak.is_dir():
        print(f"Kodak folder {kodak} not found", file=sys.stderr)
        return 2
    qs = dict(DEFAULT_Q)
    for item in args.q:
        name, _, vals = item.rpartition("=")  # q values hold no "=", a NAME[K=V] may
        qs[name] = vals
    codecs = re.findall(r"[^,\[]+(?:\[[^\]]*\])?", args.codec)
    work = Path(tempfile.mkdtemp(prefix="cflow-kodak-"))
    results = {}
    for c in codecs:
        pts = []
        q_list = qs[c] if c in qs else qs[parse_codec(c)[0]]
        for q in (int(v) for v in q_list.split(",") if v.strip()):  # "CODEC=": none
            p = point(c, q, kodak, work, args.threads)
            print(f"{c:14s} q={q:2d}  {p['bpp']:.4f} bpp  {p['psnr_rgb']:.2f} dB  "
                  f"(pipeline {p['pipeline_s']:.0f} s, decode {p['decode_s']:.0f} s)", flush=True)
            pts.append(p)
        results[c] = pts
    reused, merged = [], []
    if args.anchors_from:
        earlier = json.loads(Path(args.anchors_from).read_text())["points"]
        for c, pts in earlier.items():
            if c not in results:
                results[c] = pts
                reused.append(c)
            elif args.merge:
                now = {p["q"] for p in results[c]}
                old = [p for p in pts if p["q"] not in now]
                results[c] = sorted(results[c] + old, key=lambda p: p["q"])
                merged += [f"{c} q={p['q']}" for p in old]
    curves = {c: ([p["bpp"] for p in pts], [p["psnr_rgb"] for p in pts])
              for c, pts in results.items()}
    published = load_published(ROOT.parent / "shared/anchors/kodak")
    anchors = [a for a in ("jpeg", "webp", "x265-intra") if a in curves]
    anchors += [a for a in ("published:jpeg", "published:webp", "published:bpg_444_x265_ycbcr")
                if a in published]
    allc = dict(curves)
    allc.update({k: (v["bpp"], v["psnr_rgb"]) for k, v in published.items()})
    table = {}
    for t in curves:
        for a in anchors:
            if a != t:
                table[f"{t} vs {a}"] = bdrate.compare(allc[a][0], allc[a][1], curves[t][0],
                                                      curves[t][1])
    lines = ["| codec | anchor | BD-rate (PSNR-RGB) | BD-PSNR |", "|---|---|---|---|"]
    for k, v in table.items():
        t, a = k.split(" vs ")
        br = "n/a" if v.get("bd_rate") is None else f"{v['bd_rate']:+.1f} %"
        bp = "n/a" if v.get("bd_psnr") is None else f"{v['bd_psnr']:+.2f} dB"
        lines.append(f"| {t} | {a} | {br} | {bp} |")
    pts_lines = ["| codec | q | bpp | PSNR-RGB | PSNR-YUV |", "|---|---|---|---|---|"]
    for c, pts in results.items():
        pts_lines += [f"| {c} | {p['q']} | {p['bpp']:.4f} | {p['psnr_rgb']:.2f} | "
                      f"{p['psnr_yuv']:.2f} |" for p in pts]
    note = ([f"Points of {', '.join(reused)} reused from {args.anchors_from} (measured earlier "
             f"by this script); the others measured in this run.", ""] if reused else [])
    if merged:
        note += [f"Also reused from {args.anchors_from}: {', '.join(merged)}.", ""]
    md = "\n".join(["# Kodak RD through the pipeline", "", *note, *lines, "", *pts_lines, ""])
    print("\n" + md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"points": results, "bd": table}, indent=2))
    out.with_suffix(".md").write_text(md)
    keep = ("published:jpeg", "published:webp", "published:bpg_444_x265_ycbcr",
            "published:compressai-bmshj2018-hyperprior_mse_cpu")
    plot_rd(curves, str(out.with_suffix(".png")),
            published={k: v for k, v in published.items() if k in keep},
            title="Kodak, through the pipeline (PSNR-RGB)", max_bpp=3.5)
    print(f"wrote {out}.json/.md/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Stereo RD on held-out pairs, through the pipeline, and stereo coding speed.

Pairs: the validation split of ../shared/data/stereo (`training.stereo_data.split_pairs`: pairs
learned-stereo never trained on). For each codec and q:

* pair codecs (learned-stereo, learned-intra coding each view, jpeg):
  `run_pipeline.py configs/stereo_images.yaml` on the pairs (one .cfl per pair), then
  `codecflow decode --reference` of the written files: rate = .cfl bytes of both views over the
  pixels of both views, PSNR-RGB of the decoded pictures averaged over both views; the
  pipeline's summary PSNR must equal the decode's (checked). Each view's record bytes are read
  from the .cfl, for the second view's bits relative to the first's.
* x265 (a mono sequence codec): the pair as a two-frame low-delay sequence (left I, right P),
  through `codecflow eval`'s sweep (the same .cfl writer, read back and decoded by a separate
  codec instance).

Points are means over the pairs. BD-rate (PSNR-RGB) of every codec against learned-intra (the
bar), x265 and jpeg. Speed: pairs/s at 640x480 (the central crop of the largest held-out pair
that learned-stereo-si refines), codec work only, one thread, learned-stereo and
learned-stereo-si next to learned-intra coding both views.

Prints tables, writes bench/results/stereo_rd.{json,md,png}.
    python bench/stereo_rd.py [--codec learned-stereo,learned-intra,x265,jpeg] [--q CODEC=Q,..]
                              [--keep] [--speed-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codecflow.eval import bdrate  # noqa: E402
from codecflow.eval.plot import plot_rd  # noqa: E402
from rd_common import KEEP_HELP, bd_rows, keep_points, kept_line, q_lists, run  # noqa: E402

DEFAULT_Q = {"learned-stereo": "0,21,42,63", "learned-intra": "0,21,42,63",
             "learned-stereo-si": "0,21,42,63",
             "jpeg": "4,8,16,24,32,40,48,56", "x265": "0,3,6,9,12,18,24,30"}
SPEED_CODECS = ("learned-stereo", "learned-stereo (fast)", "learned-stereo-si", "learned-intra")
PAIR_CODECS = ("learned-stereo", "learned-stereo-si", "learned-intra", "jpeg", "webp",
               "x265-intra")


def view_bytes(cfl: Path) -> list:
    from codecflow.codecs.container import CflReader, record_size

    out = [0, 0]
    with CflReader(str(cfl)) as r:
        for _u, records in r.units():
            for rec in records:
                out[min(rec.view, 1)] += record_size(rec)
    return out


def pipeline_point(codec: str, q: int, pairs: Path, work: Path, threads: int) -> dict:
    out = work / f"{codec}_q{q}"
    t0 = time.time()
    run(["run_pipeline.py", "configs/stereo_images.yaml", "--set", f"source.path={pairs}",
         "--set", f"codec.name={codec}", "--set", f"codec.q={q}", "--set", f"output.dir={out}",
         "--set", "output.recon=false", "--set", "stats.terminal=off", "--set", "workers=1",
         "--set", f"codec.threads={threads}"])
    t_pipe = time.time() - t0
    js = out / "decode.json"
    run(["-m", "codecflow.cli", "decode", str(out), "--reference", str(pairs), "--json",
         str(js)])
    dec = json.loads(js.read_text())
    summ = json.loads((out / "summary.json").read_text())
    worst = max(abs(r["psnr_rgb"] - summ["streams"][r["stream"]]["psnr_rgb"]) for r in dec)
    if worst > 1e-9:
        raise SystemExit(f"{codec} q={q}: pipeline PSNR differs from decode by {worst}")
    vb = [view_bytes(out / f"{r['stream']}.cfl") for r in dec]
    n = len(dec)
    return {"q": q, "pairs": n, "bpp": sum(r["bpp"] for r in dec) / n,
            "psnr_rgb": sum(r["psnr_rgb"] for r in dec) / n,
            "second_view_ratio": float(np.mean([b[1] / b[0] for b in vb])),
            "pipeline_s": t_pipe, "summary_matches_decode": True}


def sweep_point(codec: str, q: int, pairs: Path, work: Path, threads: int) -> dict:
    from codecflow.eval import rd

    res = rd.sweep(codec, [q], pairs, work / f"{codec}_q{q}", params={"threads": threads})
    rows = [v[0] for v in res["per_image"].values()]
    return {"q": q, "pairs": len(rows), "bpp": float(np.mean([r["bpp"] for r in rows])),
            "psnr_rgb": float(np.mean([r["psnr_rgb"] for r in rows])),
            "via": "codecflow eval sweep (two-frame sequence, left I, right P)"}


def speed(pairs: list, threads: int, reps: int = 3) -> dict:
    """Pairs/s at 640x480 (codec encode + decode, one process, ``threads`` threads)."""
    import torch

    from codecflow.codecs.registry import create_codec
    from codecflow.data import Frame, StreamInfo, Unit
    from codecflow.training.stereo_data import read_rgb

    torch.set_num_threads(threads)
    info = StreamInfo(640, 480, pix_fmt="rgb24", views=2, unit_kind="pair")
    si = create_codec("learned-stereo-si", q=32)
    unit = None
    # the largest held-out pair whose central 640x480 crop learned-stereo-si refines (the
    # speed of its whole decoder, not of its fallback to plain pictures)
    for name, lp, rp in sorted(pairs, key=lambda p: -Path(p[1]).stat().st_size):
        left, right = read_rgb(lp), read_rgb(rp)
        h, w = left.shape[:2]
        if h < 480 or w < 640:
            continue
        y0, x0 = (h - 480) // 2, (w - 640) // 2
        crop = [np.ascontiguousarray(v[y0:y0 + 480, x0:x0 + 640]) for v in (left, right)]
        unit = Unit("pair", 0, name, [Frame.rgb(v) for v in crop], info)
        if si.encode(unit).meta["side_info"] == ["refined", "refined"]:
            break
    if unit is None:
        raise SystemExit("no held-out pair of at least 640x480 for the speed measurement")
    out = {}
    for codec in SPEED_CODECS:
        name_, _, mode = codec.partition(" ")
        c = create_codec(name_, q=32, **({"fast": True} if mode == "(fast)" else {}))
        warm = c.encode(unit)  # warm-up
        if "side_info" in warm.meta:
            out["side_info"] = warm.meta["side_info"]
        t_enc, t_dec = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            coded = c.encode(unit)
            t_enc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            c.decode(coded.records, info)
            t_dec.append(time.perf_counter() - t0)
        out[codec] = {"encode_pairs_per_s": 1.0 / float(np.median(t_enc)),
                      "decode_pairs_per_s": 1.0 / float(np.median(t_dec)),
                      "bytes": sum(len(r.payload) for r in coded.records)}
    out["pair"], out["threads"], out["device"] = name, threads, "cpu"
    return out


def main() -> int:
    from codecflow.training.stereo_data import split_pairs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="learned-stereo,learned-intra,x265,jpeg")
    ap.add_argument("--q", action="append", default=[], metavar="CODEC=Q,Q,...")
    ap.add_argument("--stereo", default=str(ROOT.parent / "shared/data/stereo"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--speed-only", action="store_true",
                    help="keep every codec's points from OUT.json, measure the speed again")
    ap.add_argument("--out", default=str(ROOT / "bench/results/stereo_rd"))
    ap.add_argument("--keep", action="store_true", help=KEEP_HELP)
    args = ap.parse_args()
    if not Path(args.stereo).is_dir():
        print(f"stereo folder {args.stereo} not found", file=sys.stderr)
        return 2
    _, val = split_pairs(args.stereo)
    work = Path(tempfile.mkdtemp(prefix="cflow-stereo-"))
    pairs = work / "pairs"
    pairs.mkdir()
    for name, lp, rp in val:
        os.symlink(os.path.abspath(lp), pairs / f"{name}_L{Path(lp).suffix}")
        os.symlink(os.path.abspath(rp), pairs / f"{name}_R{Path(rp).suffix}")
    print(f"{len(val)} held-out pairs: {', '.join(v[0] for v in val)}", flush=True)
    qs = q_lists(DEFAULT_Q, args.q)
    results = {}
    for c in [c for c in args.codec.split(",") if c and not args.speed_only]:
        pts = []
        for q in (int(v) for v in qs[c].split(",")):
            fn = pipeline_point if c in PAIR_CODECS else sweep_point
            p = fn(c, q, pairs, work, args.threads)
            extra = (f"  second view {100 * p['second_view_ratio']:.0f} % of first"
                     if "second_view_ratio" in p else "")
            print(f"{c:14s} q={q:2d}  {p['bpp']:.4f} bpp  {p['psnr_rgb']:.2f} dB{extra}",
                  flush=True)
            pts.append(p)
        results[c] = pts
    kept = (keep_points(args.out, results, {"pairs": [v[0] for v in val]})
            if args.keep or args.speed_only else [])
    curves = {c: ([p["bpp"] for p in pts], [p["psnr_rgb"] for p in pts])
              for c, pts in results.items()}
    table = {}
    for a in ("learned-intra", "x265", "jpeg"):
        for t in curves:
            if a in curves and t != a:
                table[f"{t} vs {a}"] = bdrate.compare(curves[a][0], curves[a][1],
                                                      curves[t][0], curves[t][1])
    lines = ["| codec | anchor | BD-rate (pair total, PSNR-RGB) | BD-PSNR |",
             "|---|---|---|---|"] + bd_rows(table)
    pts_lines = ["| codec | q | bpp (pair) | PSNR-RGB | second view / first view bytes |",
                 "|---|---|---|---|---|"]
    for c, pts in results.items():
        pts_lines += [f"| {c} | {p['q']} | {p['bpp']:.4f} | {p['psnr_rgb']:.2f} | " +
                      (f"{p['second_view_ratio']:.3f}" if "second_view_ratio" in p else "—") +
                      " |" for p in pts]
    sp = None if args.no_speed else speed(val, args.threads)
    sp_lines = []
    if sp:
        sp_lines = [f"## Speed, 640x480 pair ({sp['pair']} crop), CPU, {sp['threads']} thread", "",
                    f"learned-stereo-si on it: {', '.join(sp.get('side_info', []))}.", "",
                    "| codec | encode pairs/s | decode pairs/s |", "|---|---|---|"]
        sp_lines += [f"| {c} | {sp[c]['encode_pairs_per_s']:.3f} | "
                     f"{sp[c]['decode_pairs_per_s']:.3f} |"
                     for c in SPEED_CODECS if c in sp] + [""]
    md = "\n".join(["# Stereo RD on held-out pairs", "",
                    f"Pairs ({len(val)}): {', '.join(v[0] for v in val)}", "",
                    *kept_line(kept), *lines, "",
                    *pts_lines, "", *sp_lines])
    print("\n" + md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"pairs": [v[0] for v in val], "points": results, "bd": table, "speed": sp,
         "kept": kept}, indent=2))
    out.with_suffix(".md").write_text(md)
    plot_rd(curves, str(out.with_suffix(".png")), title="Held-out stereo pairs (PSNR-RGB, "
            "pair total)", max_bpp=2.0)
    print(f"wrote {out}.json/.md/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

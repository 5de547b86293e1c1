#!/usr/bin/env python3
"""Video RD on held-out clips through the pipeline, and learned-video coding speed.

Clips: the validation split of ../shared/data/video (`training.video_data.split_clips`: clips
learned-video never trained on), the first ``--frames`` frames of each, written as raw I420
``NAME_WxH_FPS.yuv`` into a scratch folder. For each codec and q:
`run_pipeline.py configs/yuv_batch.yaml` (GOP ``--gop``, one .cfl per clip), then
`codecflow decode --reference`: rate = .cfl bytes, PSNR-YUV (6:1:1) and PSNR-RGB of the
decoded frames; the pipeline's summary PSNR must equal the decode's (checked). Points are means
over the clips. BD-rate (PSNR-YUV, and PSNR-RGB) of every codec against learned-intra (the
bar), x264 and x265 (both low-delay P with the same GOP). Speed: frames/s of learned-video and
learned-intra at 640x360 and 1080p (a moving synthetic scene), codec work only, one thread.

Prints tables, writes bench/results/video_rd.{json,md,png}.
    python bench/video_rd.py [--codec learned-video,learned-intra,x264,x265] [--frames 24]
"""

from __future__ import annotations

import argparse
import json
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

DEFAULT_Q = {"learned-video": "0,21,42,63", "learned-intra": "0,21,42,63",
             "x264": "4,8,12,16,20,24,28,32,36", "x265": "4,8,12,16,20,24,28,32,36"}


def write_clips(clips: list, folder: Path, frames: int) -> list:
    """Held-out clips -> raw I420 NAME_WxH_FPS.yuv files (first ``frames`` frames)."""
    from codecflow import media
    from codecflow.stages.sources.video import decode_frames, open_video, stream_fps

    out = []
    for clip in clips:
        p = Path(clip)
        if p.suffix.lower() == ".yuv":
            w, h, fps = media.parse_yuv_name(p)
            fb = media.i420_frame_size(w, h)
            data = np.fromfile(p, dtype=np.uint8, count=fb * frames)
            n = data.size // fb
        else:
            container, stream = open_video(str(p))
            fps = stream_fps(stream)
            container.close()
            fr = [f for _, _, f in decode_frames(str(p), limit=frames)]
            h, w = fr[0].planes[0].shape
            n = len(fr)
            data = np.concatenate([pl.reshape(-1) for f in fr for pl in f.planes])
        stem = p.stem.rsplit("_", 2)[0] if media.parse_yuv_name(p) else p.stem
        dst = folder / f"{stem}_{w}x{h}_{int(round(fps))}.yuv"
        data[:media.i420_frame_size(w, h) * n].tofile(dst)
        out.append((dst.stem, n))
    return out


def point(codec: str, q: int, clips: Path, work: Path, gop: int, threads: int) -> dict:
    out = work / f"{codec}_q{q}"
    t0 = time.time()
    run(["run_pipeline.py", "configs/yuv_batch.yaml", "--set", f"source.path={clips}",
         "--set", f"codec.name={codec}", "--set", f"codec.q={q}", "--set", f"codec.gop={gop}",
         "--set", f"output.dir={out}", "--set", "output.recon=false",
         "--set", "stats.terminal=off", "--set", "workers=1", "--set", f"codec.threads={threads}"])
    t_pipe = time.time() - t0
    js = out / "decode.json"
    run(["-m", "codecflow.cli", "decode", str(out), "--reference", str(clips), "--json",
         str(js)])
    dec = json.loads(js.read_text())
    summ = json.loads((out / "summary.json").read_text())
    worst = max(abs(r["psnr_yuv"] - summ["streams"][r["stream"]]["psnr_yuv"]) for r in dec)
    if worst > 1e-9:
        raise SystemExit(f"{codec} q={q}: pipeline PSNR differs from decode by {worst}")
    n = len(dec)
    return {"q": q, "clips": n, "bpp": sum(r["bpp"] for r in dec) / n,
            "psnr_yuv": sum(r["psnr_yuv"] for r in dec) / n,
            "psnr_rgb": sum(r["psnr_rgb"] for r in dec) / n,
            "per_clip": {r["stream"]: {"bpp": r["bpp"], "psnr_yuv": r["psnr_yuv"]} for r in dec},
            "pipeline_s": t_pipe, "summary_matches_decode": True}


def speed(threads: int, frames: int = 4) -> dict:
    """Frames/s (encode, decode) of a GOP of ``frames`` moving synthetic frames."""
    import torch

    from codecflow.codecs.registry import create_codec
    from codecflow.codecs import colour
    from codecflow.data import StreamInfo, Unit
    from tests.conftest import synth_rgb

    torch.set_num_threads(threads)
    out = {"threads": threads, "device": "cpu", "frames": frames}
    for w, h in ((640, 360), (1920, 1080)):
        info = StreamInfo(w, h, pix_fmt="yuv420p", unit_kind="gop", gop=frames)
        fr = [colour.rgb_to_i420(synth_rgb(w, h, seed=1, shift=4 * i), info.matrix, info.range)
              for i in range(frames)]
        unit = Unit("gop", 0, "s", fr, info)
        for codec in ("learned-video", "learned-intra"):
            c = create_codec(codec, q=32)
            t0 = time.perf_counter()
            coded = c.encode(unit)
            t_enc = time.perf_counter() - t0
            t0 = time.perf_counter()
            c.decode(coded.records, info)
            t_dec = time.perf_counter() - t0
            out[f"{codec} {w}x{h}"] = {"encode_fps": frames / t_enc, "decode_fps": frames / t_dec}
    return out


def main() -> int:
    from codecflow.training.video_data import split_clips

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="learned-video,learned-intra,x264,x265")
    ap.add_argument("--q", action="append", default=[], metavar="CODEC=Q,Q,...")
    ap.add_argument("--video", default=str(ROOT.parent / "shared/data/video"))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--gop", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench/results/video_rd"))
    ap.add_argument("--keep", action="store_true", help=KEEP_HELP)
    args = ap.parse_args()
    _, val = split_clips(args.video)
    if not val:
        print(f"no held-out clips under {args.video}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="cflow-video-"))
    clips = work / "clips"
    clips.mkdir()
    written = write_clips(val, clips, args.frames)
    print(f"{len(written)} held-out clips: " +
          ", ".join(f"{n} ({k} frames)" for n, k in written), flush=True)
    qs = q_lists(DEFAULT_Q, args.q)
    results = {}
    for c in [c for c in args.codec.split(",") if c]:
        pts = []
        for q in (int(v) for v in qs[c].split(",")):
            p = point(c, q, clips, work, args.gop, args.threads)
            print(f"{c:14s} q={q:2d}  {p['bpp']:.4f} bpp  YUV {p['psnr_yuv']:.2f} dB  "
                  f"RGB {p['psnr_rgb']:.2f} dB  ({p['pipeline_s']:.0f} s)", flush=True)
            pts.append(p)
        results[c] = pts
    kept = (keep_points(args.out, results, {"clips": written, "gop": args.gop})
            if args.keep else [])
    table = {}
    for metric in ("psnr_yuv", "psnr_rgb"):
        curves = {c: ([p["bpp"] for p in pts], [p[metric] for p in pts])
                  for c, pts in results.items()}
        for a in ("learned-intra", "x264", "x265"):
            for t in curves:
                if a in curves and t != a:
                    table[f"{t} vs {a} ({metric})"] = bdrate.compare(
                        curves[a][0], curves[a][1], curves[t][0], curves[t][1])
    lines = ["| codec | anchor | metric | BD-rate | BD-PSNR |",
             "|---|---|---|---|---|"] + bd_rows(table)
    pts_lines = ["| codec | q | bpp | PSNR-YUV | PSNR-RGB |", "|---|---|---|---|---|"]
    for c, pts in results.items():
        pts_lines += [f"| {c} | {p['q']} | {p['bpp']:.4f} | {p['psnr_yuv']:.2f} | "
                      f"{p['psnr_rgb']:.2f} |" for p in pts]
    sp = None if args.no_speed else speed(args.threads)
    sp_lines = []
    if sp:
        sp_lines = [f"## Speed, CPU, {sp['threads']} thread (GOP of {sp['frames']} frames)", "",
                    "| codec | size | encode fps | decode fps |", "|---|---|---|---|"]
        for k, v in sp.items():
            if isinstance(v, dict):
                c, size = k.split(" ")
                sp_lines.append(f"| {c} | {size} | {v['encode_fps']:.3f} | "
                                f"{v['decode_fps']:.3f} |")
        sp_lines.append("")
    md = "\n".join(["# Video RD on held-out clips (GOP %d)" % args.gop, "",
                    "Clips: " + ", ".join(f"{n} ({k} frames)" for n, k in written), "",
                    *kept_line(kept), *lines, "", *pts_lines, "", *sp_lines])
    print("\n" + md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"clips": written, "gop": args.gop, "points": results, "bd": table, "speed": sp,
         "kept": kept},
        indent=2))
    out.with_suffix(".md").write_text(md)
    curves = {c: ([p["bpp"] for p in pts], [p["psnr_yuv"] for p in pts])
              for c, pts in results.items()}
    plot_rd(curves, str(out.with_suffix(".png")), metric="psnr_yuv",
            title=f"Held-out clips, GOP {args.gop} (PSNR-YUV)", max_bpp=2.0)
    print(f"wrote {out}.json/.md/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

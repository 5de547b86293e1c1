#!/usr/bin/env python3
"""Soak: a long live run with a consumer slower than the source.

The synthetic scene is paced at --fps (live mode: the source never waits; when the encoders
fall behind, the oldest queued units are dropped and counted), coded by --workers x264 worker(s)
at a slow preset. While it runs, the resident memory of every pipeline process is sampled once
a second (/proc). At the end:
* RSS: each process's median over the first and the last fifth of the run (after its first
  10 s of start-up), and the growth;
* latency (capture to written, units.jsonl): median and 99th percentile per fifth of the run;
* drops: summary.json's total, the sum over its streams, and frames read = written + dropped.
Prints a table, writes bench/results/soak.{json,md}.
    python bench/soak.py [--frames 10000] [--fps 100] [--workers 1] [--preset slower]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WARMUP_S = 10.0


def rss_kib(pid: int) -> int | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def tree(pid: int) -> dict:
    """pid -> a short name for the supervisor and its children."""
    out = {pid: "supervisor"}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            cmd = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"stage" in cmd:
            i = cmd.index(b"stage")
            name = cmd[i + 1].decode()
            if b"--worker" in cmd:
                name += "-" + cmd[cmd.index(b"--worker") + 1].decode()
            out[int(d)] = name
    return out


def fifths(values: list) -> list:
    n = len(values)
    return [values[k * n // 5:(k + 1) * n // 5] for k in range(5)] if n >= 5 else [values]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--fps", type=float, default=100.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--preset", default="slower", help="x264 preset (slow: the slow consumer)")
    ap.add_argument("--size", default="320x192")
    ap.add_argument("--out", default=str(ROOT / "bench/results/soak"))
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="cflow-soak-"))
    out = work / "out"
    cmd = [sys.executable, "run_pipeline.py", "configs/demo_video.yaml", "--set", "mode=live",
           "--set", "source.realtime=true", "--set", f"source.fps={args.fps}",
           "--set", f"source.frames={args.frames}", "--set", f"source.width={w}",
           "--set", f"source.height={h}", "--set", "codec.name=x264",
           "--set", f"codec.params={{preset: {args.preset}}}", "--set", f"workers={args.workers}",
           "--set", f"output.dir={out}", "--set", "stats.terminal=line"]
    print(f"soak: {args.frames} frames at {args.fps:g} fps ({args.frames / args.fps:.0f} s), "
          f"{args.workers} x264 worker(s), preset {args.preset}, {w}x{h}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=open(work / "log", "w"))
    samples: dict = {}  # name -> [(t, KiB)]
    while proc.poll() is None:
        for pid, name in tree(proc.pid).items():
            kib = rss_kib(pid)
            if kib:
                samples.setdefault(name, []).append((time.monotonic() - t0, kib))
        time.sleep(1.0)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        print((work / "log").read_text()[-3000:], file=sys.stderr)
        return proc.returncode
    s = json.loads((out / "summary.json").read_text())
    units = [json.loads(ln) for ln in (out / "units.jsonl").read_text().splitlines()]
    lat = [u["latency_s"] for u in units]
    rss_rows = []
    for name, pts in sorted(samples.items()):
        # after the start-up (imports, codec set-up): the first WARMUP_S seconds are left out
        kib = [k for t, k in pts if t >= WARMUP_S] if wall > 3 * WARMUP_S else [k for _, k in pts]
        parts = fifths(kib)
        first, last = float(np.median(parts[0])), float(np.median(parts[-1]))
        rss_rows.append({"process": name, "samples": len(kib), "first_mib": first / 1024,
                         "last_mib": last / 1024, "max_mib": max(kib) / 1024,
                         "growth_pct": 100.0 * (last - first) / first})
    lat_rows = [{"fifth": k + 1, "units": len(p), "median_ms": 1000 * float(np.median(p)),
                 "p99_ms": 1000 * float(np.percentile(p, 99))}
                for k, p in enumerate(fifths(lat)) if p]
    streams = s["streams"]
    read = s["frames"] + s["dropped"]
    drops = {"summary_dropped": s["dropped"],
             "sum_of_streams_dropped": sum(v["dropped"] for v in streams.values()),
             "frames_written": s["frames"], "frames_read": read, "frames_made": args.frames,
             "complete": s["complete"]}
    md = [f"# Soak: {args.frames} frames live at {args.fps:g} fps, {args.workers} x264 "
          f"worker(s) (preset {args.preset}), {w}x{h}", "",
          f"Wall time {wall:.0f} s. Frames written {s['frames']}, dropped {s['dropped']} "
          f"(summary) / {drops['sum_of_streams_dropped']} (sum over streams); written + "
          f"dropped = {read} of {args.frames} made; complete: {s['complete']}.", "",
          "| process | samples | RSS first fifth (MiB) | last fifth | max | growth |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['process']} | {r['samples']} | {r['first_mib']:.1f} | {r['last_mib']:.1f} | "
           f"{r['max_mib']:.1f} | {r['growth_pct']:+.1f} % |" for r in rss_rows]
    md += ["", "| fifth of the run | units | latency median (ms) | p99 (ms) |", "|---|---|---|---|"]
    md += [f"| {r['fifth']} | {r['units']} | {r['median_ms']:.0f} | {r['p99_ms']:.0f} |"
           for r in lat_rows]
    text = "\n".join(md) + "\n"
    print("\n" + text)
    outp = Path(args.out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    outp.with_suffix(".json").write_text(json.dumps(
        {"args": vars(args), "wall_s": wall, "rss": rss_rows, "latency": lat_rows,
         "drops": drops, "machine_cpus": os.cpu_count()}, indent=2))
    outp.with_suffix(".md").write_text(text)
    print(f"wrote {outp}.json/.md")
    ok = drops["summary_dropped"] == drops["sum_of_streams_dropped"] and read == args.frames
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

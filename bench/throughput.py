#!/usr/bin/env python3
"""Throughput benchmark (issue: backbone).

1. Raw 1080p I420 frames across one stage boundary (two processes, ZeroMQ PUSH/PULL, the real
   wire messages of codecflow.pipeline.protocol), zero-copy multipart vs copying, ipc and tcp.
   Target: >= 500 fps with zero-copy.
2. Pipeline fps / bare codec fps for x264 on the same 1080p input in the same run, with x264
   on all cores and on 1 thread (the plumbing then has a core of its own): the bare
   loop calls codec.encode() on the same GOP units in one process; the pipeline is a real
   `codecflow run` (source, 1 encode worker, sink as processes). Both exclude the first unit
   (start-up). Target: >= 0.95 (plumbing overhead <= 5 %). Reported with PSNR stats off (same
   work as the bare loop) and on (the full live-stats cost).

Prints a table and writes bench/results/throughput.json.
    python bench/throughput.py [--frames 60] [--transport-frames 600]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codecflow.data import Frame, StreamInfo, Unit  # noqa: E402

from codecflow.codecs.registry import create_codec  # noqa: E402
from codecflow.pipeline import protocol  # noqa: E402

W, H = 1920, 1080


def make_frames(n: int, seed: int = 0) -> list:
    """Moving textured 1080p I420 frames (compressible, with motion)."""
    from codecflow.stages.sources.synthetic import SyntheticVideoSource  # noqa: PLC0415
    from codecflow.pipeline import schema  # noqa: PLC0415

    cfg = schema.parse(SyntheticVideoSource.Config,
                       {"width": W, "height": H, "frames": n, "seed": seed}, "source")
    (stream,) = list(SyntheticVideoSource(cfg).streams())
    return [views[0] for views in stream.frames]


# ------------------------------------------------------------------------------- transport
def _receiver(endpoint: str, n: int, conn) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.RCVHWM, 16)
    s.bind(endpoint)
    conn.send("ready")
    got = 0
    t0 = None
    while got < n:
        frames = s.recv_multipart(copy=False)
        if t0 is None:
            t0 = time.perf_counter()
        h = protocol.unpack_header(frames[0])
        unit = protocol.unit_from_msg(h, frames[1:])
        assert unit.frames[0].planes[0].shape == (H, W)
        got += 1
    conn.send(time.perf_counter() - t0)
    s.close()
    ctx.term()


def transport_fps(endpoint: str, n: int, copy: bool) -> float:
    parent, child = mp.Pipe()
    p = mp.get_context("spawn").Process(target=_receiver, args=(endpoint, n, child))
    p.start()
    assert parent.recv() == "ready"
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 16)
    s.connect(endpoint)
    y = np.random.default_rng(0).integers(0, 255, (H, W), dtype=np.uint8)
    u = np.full((H // 2, W // 2), 128, np.uint8)
    info = StreamInfo(W, H, "yuv420p", 1, 30.0, "frame", 1)
    for i in range(n):
        unit = Unit("frame", i, "bench", [Frame.yuv420(y, u, u)], info, 0.0, i, i)
        s.send_multipart(protocol.unit_to_msg(unit, 0.0), copy=copy)
    elapsed = parent.recv()
    p.join()
    s.close()
    ctx.term()
    return (n - 1) / elapsed


# ---------------------------------------------------------------------------------- x264
def read_yuv(path: Path) -> list:
    from codecflow.pipeline import schema  # noqa: PLC0415
    from codecflow.stages.sources.yuv import YuvSource  # noqa: PLC0415

    cfg = schema.parse(YuvSource.Config, {"path": str(path)}, "source")
    (stream,) = list(YuvSource(cfg).streams())
    return [views[0] for views in stream.frames]


def gop_units(frames: list, gop: int) -> list:
    info = StreamInfo(W, H, "yuv420p", 1, 30.0, "gop", gop)
    return [Unit("gop", i // gop, "bench", frames[i:i + gop], info, 0.0, i, i // gop)
            for i in range(0, len(frames), gop)]


def bare_fps(frames: list, gop: int, q: int, threads: int) -> float:
    codec = create_codec("x264", q=q, threads=threads)
    units = gop_units(frames, gop)
    codec.encode(units[0])  # warm-up, excluded like the pipeline's first unit
    t0 = time.perf_counter()
    n = 0
    for u in units[1:]:
        codec.encode(u)
        n += len(u.frames)
    return n / (time.perf_counter() - t0)


def pipeline_fps(yuv: Path, out: Path, gop: int, q: int, psnr: bool, threads: int) -> float:
    cmd = [sys.executable, "-m", "codecflow.cli", "run", str(ROOT / "configs/yuv_batch.yaml"),
           "--set", f"source.path={yuv}", "--set", f"output.dir={out}", "--set", "workers=1",
           "--set", f"codec.gop={gop}", "--set", f"codec.q={q}", "--set", "output.recon=false",
           "--set", f"codec.threads={threads}",
           "--set", f"stats.psnr={'true' if psnr else 'false'}", "--set", "stats.terminal=off"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "units.jsonl").read_text().splitlines()]
    frames = sum(r["frames"] for r in rows[1:])
    return frames / (rows[-1]["t"] - rows[0]["t"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64, help="1080p frames for the x264 ratio")
    ap.add_argument("--transport-frames", type=int, default=600)
    ap.add_argument("--gop", type=int, default=8)
    ap.add_argument("--q", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "bench/results/throughput.json"))
    args = ap.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version()},
               "frame": f"{W}x{H} I420", "transport": {}}
    tmp = Path(tempfile.mkdtemp(prefix="cflow-bench-"))
    n = args.transport_frames
    for name, ep in (("ipc", f"ipc://{tmp}/t.sock"), ("tcp", "tcp://127.0.0.1:0")):
        if name == "tcp":
            from codecflow.pipeline.transport import free_tcp_port  # noqa: PLC0415

            ep = f"tcp://127.0.0.1:{free_tcp_port()}"
        for copy in (False, True):
            key = f"{name}_{'copy' if copy else 'zero_copy'}"
            results["transport"][key] = transport_fps(ep, n, copy)
    frames = make_frames(args.frames)
    yuv = tmp / f"bench_{W}x{H}_30.yuv"
    with open(yuv, "wb") as f:
        for fr in frames:
            for p in fr.planes:
                f.write(p.tobytes())
    frames = read_yuv(yuv)  # the bare loop reads the same file through the same source
    for threads in (os.cpu_count() or 1, 1):
        key = f"x264_threads{threads}"
        bare_before = bare_fps(frames, args.gop, args.q, threads)
        pipe = pipeline_fps(yuv, tmp / f"p0_{threads}", args.gop, args.q, False, threads)
        pipe_stats = pipeline_fps(yuv, tmp / f"p1_{threads}", args.gop, args.q, True, threads)
        bare_after = bare_fps(frames, args.gop, args.q, threads)
        bare = (bare_before + bare_after) / 2  # the machine is noisy: bracket the pipeline
        results[key] = {"frames": args.frames, "gop": args.gop, "q": args.q,
                        "threads": threads, "bare_fps": bare, "bare_fps_before": bare_before,
                        "bare_fps_after": bare_after, "pipeline_fps": pipe,
                        "ratio": pipe / bare, "pipeline_fps_with_psnr": pipe_stats,
                        "ratio_with_psnr": pipe_stats / bare}
    print(f"\n{'measure':44s} {'value':>10s}  target")
    for k, v in results["transport"].items():
        tgt = ">= 500" if k.endswith("zero_copy") else ""
        print(f"{'1080p frames across one boundary, ' + k:44s} {v:10.0f}  {tgt}")
    for key in [k for k in results if k.startswith("x264_threads")]:
        x = results[key]
        t = f"x264 {x['threads']} thread(s)"
        print(f"{t + ': bare codec.encode fps (before/after)':44s} {x['bare_fps']:10.2f}  "
              f"({x['bare_fps_before']:.2f} / {x['bare_fps_after']:.2f})")
        print(f"{t + ': pipeline fps (psnr off)':44s} {x['pipeline_fps']:10.2f}")
        print(f"{t + ': pipeline / bare':44s} {x['ratio']:10.3f}  >= 0.95")
        print(f"{t + ': pipeline fps (psnr on)':44s} {x['pipeline_fps_with_psnr']:10.2f}")
        print(f"{t + ': pipeline (psnr on) / bare':44s} {x['ratio_with_psnr']:10.3f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

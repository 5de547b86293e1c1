#!/usr/bin/env python3
"""learned-intra encode / decode speed, split into network (transforms, entropy-parameter nets)
and entropy-coding (CompressAI rANS) time.

Sizes 512x768 (Kodak) and 1920x1080; CPU always, CUDA too when available. The test picture is a
Kodak image (../shared/data, resized) when present, else a synthetic texture. Prints a table and
writes bench/results/codec_speed.json.

    python bench/codec_speed.py [--frames 3] [--threads 0] [--q 32] [--weights PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = ((512, 768), (1080, 1920))


def test_picture(h: int, w: int) -> np.ndarray:
    import cv2

    kodak = ROOT.parent / "shared" / "data" / "images" / "kodak" / "kodim23.png"
    if kodak.is_file():
        img = cv2.imread(str(kodak))[..., ::-1]
        return np.ascontiguousarray(cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC))
    from codecflow.training.datasets import synthetic_images

    img = synthetic_images(1, max(h, w))[0]
    return np.ascontiguousarray(img[:h, :w])


class Timer:
    """Accumulates the time spent in wrapped entropy-coding methods."""

    def __init__(self, sync):
        self.t = 0.0
        self.sync = sync

    def wrap(self, obj, name):
        fn = getattr(obj, name)

        def wrapped(*a, **k):
            self.sync()
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.sync()
                self.t += time.perf_counter() - t0

        setattr(obj, name, wrapped)


def bench_device(device: str, frames: int, q: int, weights) -> list:
    import torch

    from codecflow.data import Frame, StreamInfo

    from codecflow.codecs.registry import create_codec

    codec = create_codec("learned-intra", q=q, device=device, weights=weights)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    timer = Timer(sync)
    for mod in (codec.model.entropy_bottleneck, codec.model.gaussian_conditional):
        timer.wrap(mod, "compress")
        timer.wrap(mod, "decompress")
    rows = []
    for h, w in SIZES:
        img = test_picture(h, w)
        info = StreamInfo(width=w, height=h, pix_fmt="rgb24")
        frame = Frame.rgb(img)
        payload = codec.encode_picture(frame, info)  # warm-up
        codec.decode_picture(payload, info)
        enc_t = enc_e = dec_t = dec_e = 0.0
        for _ in range(frames):
            timer.t = 0.0
            sync()
            t0 = time.perf_counter()
            payload = codec.encode_picture(frame, info)
            sync()
            enc_t += time.perf_counter() - t0
            enc_e += timer.t
            timer.t = 0.0
            t0 = time.perf_counter()
            rec = codec.decode_picture(payload, info)
            sync()
            dec_t += time.perf_counter() - t0
            dec_e += timer.t
        n = frames
        from codecflow.codecs.metrics import psnr

        rows.append({
            "device": device, "size": f"{w}x{h}", "q": q, "frames": n,
            "bpp": len(payload) * 8 / (h * w), "psnr_rgb": psnr(img, rec.planes[0]),
            "enc_fps": n / enc_t, "dec_fps": n / dec_t,
            "enc_ms": 1000 * enc_t / n, "enc_net_ms": 1000 * (enc_t - enc_e) / n,
            "enc_entropy_ms": 1000 * enc_e / n,
            "dec_ms": 1000 * dec_t / n, "dec_net_ms": 1000 * (dec_t - dec_e) / n,
            "dec_entropy_ms": 1000 * dec_e / n,
        })
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--q", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--weights", default=None)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "codec_speed.json"))
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for d in devices:
        rows += bench_device(d, args.frames, args.q, args.weights)
    hdr = (f"{'device':6} {'size':>9} {'bpp':>6} {'PSNR':>6} | {'enc fps':>7} {'net ms':>8} "
           f"{'rANS ms':>8} | {'dec fps':>7} {'net ms':>8} {'rANS ms':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['device']:6} {r['size']:>9} {r['bpp']:6.3f} {r['psnr_rgb']:6.2f} | "
              f"{r['enc_fps']:7.2f} {r['enc_net_ms']:8.1f} {r['enc_entropy_ms']:8.1f} | "
              f"{r['dec_fps']:7.2f} {r['dec_net_ms']:8.1f} {r['dec_entropy_ms']:8.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

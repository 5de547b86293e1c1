"""Pack the training pictures into one small folder that can travel to a GPU machine.

    python -m codecflow.training.pack --out .train_pack --budget-mb 48

A device call carries at most 64 MiB and ``../shared`` does not travel, so the training set
(photos, stereo photos, frames of the raw videos; never Kodak) is re-encoded as JPEG files at
the highest quality that fits the budget (95 unless that is too big), with ``pack.json`` naming
the original data sets. `load_training_images` on the packed folder reports those sets, so
weights trained from a pack record where their pictures came from. The training sampler
downscales every crop by a random 0.5-1.0, which hides what little JPEG q90+ leaves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2

from codecflow.training.datasets import default_data_root, load_training_images

PACK_INDEX = "pack.json"


def encode_all(images: list, quality: int) -> list[bytes]:
    out = []
    for im in images:
        ok, buf = cv2.imencode(".jpg", im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        out.append(buf.tobytes())
    return out


def pack(images: list, sets: list, out: Path, budget_bytes: int,
         qualities=(95, 93, 90, 87, 85)) -> dict:
    """Write ``images`` as JPEG files under ``out`` at the first quality that fits the budget.
    Refuses (ValueError) when even the lowest does not fit; nothing is written then."""
    chosen = None
    for q in qualities:
        blobs = encode_all(images, q)
        total = sum(len(b) for b in blobs)
        if total <= budget_bytes:
            chosen = q
            break
    if chosen is None:
        raise ValueError(f"the training set needs {total / 2**20:.1f} MiB at JPEG q{qualities[-1]}"
                         f", more than the budget of {budget_bytes / 2**20:.1f} MiB")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jpg"):
        old.unlink()
    for i, b in enumerate(blobs):
        (out / f"{i:05d}.jpg").write_bytes(b)
    index = {"sources": list(sets), "quality": chosen, "images": len(blobs), "bytes": total,
             "pixels": int(sum(im.shape[0] * im.shape[1] for im in images)),
             "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (out / PACK_INDEX).write_text(json.dumps(index, indent=1) + "\n")
    return index


def main(argv=None) -> int:
    root = default_data_root()
    p = argparse.ArgumentParser(prog="python -m codecflow.training.pack",
                                description="pack the training pictures for a GPU machine")
    p.add_argument("--out", default=".train_pack", help="output folder (git-ignored)")
    p.add_argument("--data", default=str(root / "images" / "train"))
    p.add_argument("--no-extra-data", action="store_true")
    p.add_argument("--budget-mb", type=float, default=48.0, help="MiB for the JPEG files")
    args = p.parse_args(argv)
    try:
        images, sets = load_training_images(args.data, extra=not args.no_extra_data)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        index = pack(images, sets, Path(args.out), int(args.budget_mb * 2**20))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"packed {index['images']} pictures ({index['pixels'] / 1e6:.0f} M pixels) into "
          f"{args.out}: {index['bytes'] / 2**20:.1f} MiB at JPEG q{index['quality']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

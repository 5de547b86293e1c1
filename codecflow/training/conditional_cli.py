"""The training command shared by the conditional codecs (learned-stereo, learned-video): a
`ConditionalLatentCoder` trained on cached latent examples through the shared loop, the intra
transforms frozen; resume; export (see docs/training.md).

Each codec's module (`training/stereo.py`, `training/video.py`) gives its data arguments and
builds its (latent, condition) examples; everything else is here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from codecflow.training.options import given, track_given


def _int_list(s: str) -> list:
    return [int(v) for v in s.split(",") if v.strip()] if s else []


def add_common_arguments(p: argparse.ArgumentParser, run_dir: str, crop: int = 16) -> None:
    p.add_argument("--run-dir", default=run_dir, help="run folder (cache, checkpoint)")
    p.add_argument("--qs", type=_int_list, default=[0, 21, 42, 63],
                   help="q values the examples are coded at")
    p.add_argument("--intra-weights", default=None,
                   help="learned-intra weights the coder builds on (default: shipped)")
    p.add_argument("--steps", type=int, default=None, help="total steps (default: until killed)")
    p.add_argument("--crop", type=int, default=crop,
                   help="crop in latent positions (16 px each)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--decay-at", type=_int_list, default=[])
    p.add_argument("--decay-factor", type=float, default=0.3)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--F", type=int, default=64, help="condition features (new runs only; the "
                   "hyper and entropy-parameter widths are the intra model's, whose entropy "
                   "model a new run starts from)")
    p.add_argument("--latent-lambda", type=float, default=0.0,
                   help="weight of the latent MSE next to the rate (the quantisation error "
                        "is the same as learned-intra's whatever the coder predicts)")
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--ckpt-every", type=float, default=300.0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", metavar="PATH", default=None,
                   help="write fp16 weights from the run's checkpoint to PATH and exit")
    track_given(p)  # last: the codec's own options come before these


def command(module: str, word: str) -> str:
    """The command line as the manifest records it (also when started as `codecflow train
    WORD ...`)."""
    argv = sys.argv[1:]
    for i in range(len(argv) - 1):
        if argv[i] == "train" and argv[i + 1] == word:
            argv = argv[i + 2:]
            break
    return f"python -m {module} " + " ".join(argv)


def export(run_dir: str | Path, out: str | Path, codec: str, cmd: str) -> dict:
    from codecflow.codecs.learned import weights as W
    from codecflow.codecs.learned.conditional import build_coder
    from codecflow.training.loop import load_checkpoint

    ckpt = Path(run_dir) / "checkpoint.pt"
    if not ckpt.is_file():
        raise SystemExit(f"no checkpoint at {ckpt}: train first")
    state = load_checkpoint(ckpt)
    cfg = state["config"]
    coder = build_coder(cfg["arch"])
    coder.load_state_dict(state["model"])
    training = {"data": [_relative(d) for d in cfg.get("data_sets", [])],
                "command": cfg.get("commands", []),
                "steps": int(state["step"]), "device": state.get("device", "cpu"),
                "hours": round(float(state["elapsed"]) / 3600, 3), "crop": cfg["crop"],
                "batch": cfg["batch"], "lr": cfg["lr"], "decay_at": cfg.get("decay_at", []),
                "qs": cfg.get("qs"), "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "export_command": cmd, "base": cfg["arch"].get("base")}
    return W.save_weights(coder, out, training, codec=codec)


def _relative(data_set: str) -> str:
    """'/abs/path (details)' -> 'path relative to the repository (details)'."""
    import os

    from codecflow.codecs.learned.weights import repo_root

    head, sep, tail = data_set.partition(" ")
    if os.path.isabs(head):
        head = os.path.relpath(head, repo_root())
    return head + sep + tail


def run(args, codec: str, c_frac: int, build_examples, cmd: str) -> int:
    """Train / resume (or export with --export) the conditional coder of ``codec``;
    ``build_examples(args, intra, intra_sha, run_dir) -> (ys, cs, val, data sets)``."""
    if args.export:
        entry = export(args.run_dir, args.export, codec, cmd)
        print(f"exported {args.export}: {entry['bytes']} bytes, sha256 {entry['sha256']}, "
              f"{entry['training']['steps']} steps")
        return 0
    import torch

    from codecflow.codecs.learned import weights as W
    from codecflow.training.conditional_task import ConditionalLatentTask
    from codecflow.training.loop import run as run_loop

    if args.threads:
        torch.set_num_threads(int(args.threads))
    intra_path = Path(args.intra_weights or W.default_path("learned-intra"))
    intra, intra_sha = W.load_intra_model(intra_path, "cpu")
    run_dir = Path(args.run_dir)
    t0 = time.time()
    with torch.no_grad():
        ys, cs, val, sets = build_examples(args, intra, intra_sha, run_dir)
    print(f"{len(ys)} training examples, {len(val)} validation examples "
          f"({time.time() - t0:.0f} s)", flush=True)
    cfg = {"run_dir": str(run_dir), "steps": args.steps, "crop": int(args.crop),
           "batch": int(args.batch), "lr": float(args.lr), "warmup": int(args.warmup),
           "decay_at": list(args.decay_at), "decay_factor": float(args.decay_factor),
           "clip": float(args.clip), "threads": int(args.threads),
           "arch": {"class": "ConditionalLatentCoder", "M": intra.M, "C": intra.M,
                    "N": intra.N, "H": intra.h_s[2].out_channels,
                    "E": intra.ep[2].out_channels, "F": int(args.F),
                    "base": {"codec": "learned-intra", "sha256": intra_sha}},
           "init_from": f"learned-intra {intra_sha[:12]} (its entropy model)",
           "val_every": int(args.val_every), "ckpt_every": float(args.ckpt_every),
           "log_every": int(args.log_every), "seed": int(args.seed),
           "latent_lambda": float(args.latent_lambda), "qs": list(args.qs),
           "device": "cpu", "commands": [cmd], "given": given(args)}
    task = ConditionalLatentTask(ys, cs, val, c_frac=c_frac, data_sets=sets, init_model=intra)
    res = run_loop(task, cfg)
    print(f"stopped at step {res['step']} ({res['elapsed'] / 3600:.2f} h)")
    return 0


def add(out: dict, ex: dict) -> None:
    """Append the lists of ``ex`` to those of ``out``."""
    for k, v in ex.items():
        out.setdefault(k, []).extend(v)

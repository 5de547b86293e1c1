"""`codecflow train image` / `python -m codecflow.training.image`: train, resume, export the
learned intra model (see docs/training.md).

    python -m codecflow.training.image --run-dir runs/intra --threads 1          # train/resume
    python -m codecflow.training.image --run-dir runs/intra --export weights/learned_intra.pt
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from codecflow.training.datasets import default_data_root
from codecflow.training.options import given, track_given


def _int_list(s: str) -> list:
    return [int(v) for v in s.split(",") if v.strip()] if s else []


def _float_list(s: str) -> list:
    return [float(v) for v in s.split(",") if v.strip()] if s else []


def add_arguments(p: argparse.ArgumentParser) -> None:
    root = default_data_root()
    p.add_argument("--run-dir", default="runs/intra", help="run folder (checkpoint, logs)")
    p.add_argument("--data", default=str(root / "images" / "train"),
                   help="folder of training images (default ../shared/data/images/train)")
    p.add_argument("--no-extra-data", action="store_true",
                   help="only --data (not also the stereo photos and raw video frames)")
    p.add_argument("--synthetic", action="store_true",
                   help="train on generated textures (tests; no data folder needed)")
    p.add_argument("--steps", type=int, default=None, help="total steps (default: until killed)")
    p.add_argument("--crop", type=int, default=128, help="crop size (multiple of 64)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=500, help="linear LR warm-up steps")
    p.add_argument("--rewarm", action="store_true",
                   help="on resume, start a new LR cycle: warm up again from the current step")
    p.add_argument("--decay-at", type=_int_list, default=[],
                   help="comma-separated steps where the LR is multiplied by --decay-factor")
    p.add_argument("--decay-factor", type=float, default=0.3)
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--procs", type=int, default=1,
                   help="data-parallel processes (CPU: one per core, each pinned to it, with "
                        "--threads 1; --batch is split between them)")
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda or cuda:N (the model, the batch and -- by default on a GPU -- "
                        "the whole training set live there)")
    p.add_argument("--amp", choices=("off", "bf16"), default="off",
                   help="bf16 autocast for the transforms (the entropy models stay fp32)")
    p.add_argument("--data-on-device", choices=("auto", "yes", "no"), default="auto",
                   help="keep the training pictures on --device as uint8 and cut crops there "
                        "(auto: yes on a GPU)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="stop (and checkpoint) after this many seconds of this call")
    p.add_argument("--decay-time", type=_float_list,
                   default=[], help="with --time-limit: also decay the LR at these fractions of "
                                    "it (e.g. 0.7,0.9), for runs measured in time, not steps")
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--dist-port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--N", type=int, default=64, help="transform channels (new runs only)")
    p.add_argument("--M", type=int, default=128, help="latent channels (new runs only)")
    p.add_argument("--lambdas", type=_float_list, default=None,
                   help="rate anchors, comma-separated, increasing (new runs only; default "
                        "0.0018,0.0048,0.013,0.0348,0.0932): q 0..63 spans them")
    p.add_argument("--oversampled", action="store_true",
                   help="train the model of learned-intra's oversampled mode (q 48..63: the "
                        "picture coded at 2x, the distortion of its 2x2 means; new runs only, "
                        "start it --init-from weights/learned_intra.pt; export it to "
                        "weights/learned_intra_2x.pt)")
    p.add_argument("--init-from", default=None,
                   help="start a new run from shipped weights (e.g. weights/learned_intra.pt)")
    p.add_argument("--val-dir", default=str(root / "images" / "kodak"),
                   help="validation images (Kodak; never trained on)")
    p.add_argument("--val-every", type=int, default=1000, help="validate every N steps (0: off)")
    p.add_argument("--ckpt-every", type=float, default=300.0, help="checkpoint every N seconds")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", metavar="PATH", default=None,
                   help="write fp16 weights from the run's checkpoint to PATH, update the "
                        "manifest.json next to it, and exit")
    p.add_argument("--add-tables", metavar="PATH", default=None,
                   help="rewrite an older weights file (format 1) with its coding tables "
                        "(weights unchanged), update its manifest entry, and exit")
    track_given(p)


def _config(args) -> dict:
    crop = int(args.crop)
    if crop % 64 or crop < 64:
        raise SystemExit(f"--crop must be a positive multiple of 64, got {crop}")
    return {"run_dir": str(args.run_dir), "data": str(args.data), "steps": args.steps,
            "crop": crop, "batch": int(args.batch), "lr": float(args.lr),
            "warmup": int(args.warmup), "decay_at": list(args.decay_at),
            "decay_factor": float(args.decay_factor), "clip": float(args.clip),
            "threads": int(args.threads), "arch": {"N": args.N, "M": args.M,
                                                   **({"lambdas": list(args.lambdas)}
                                                      if args.lambdas else {})},
            "init_from": args.init_from, "oversampled": bool(args.oversampled),
            "val_dir": str(args.val_dir),
            "val_every": int(args.val_every), "ckpt_every": float(args.ckpt_every),
            "log_every": int(args.log_every), "seed": int(args.seed),
            "synthetic": bool(args.synthetic), "rewarm": bool(args.rewarm),
            "decay_time": list(args.decay_time), "device": args.device, "amp": args.amp,
            "time_limit": args.time_limit,
            "data_on_device": {"auto": None, "yes": True, "no": False}[args.data_on_device],
            "commands": [_command()], "given": given(args)}


def _command() -> str:
    return "python -m codecflow.training.image " + " ".join(sys.argv[1:])


def export(run_dir: str | Path, out: str | Path) -> dict:
    """Checkpoint of a run -> fp16 weights file + manifest entry. Returns the entry."""
    from codecflow.codecs.learned import weights as W
    from codecflow.codecs.learned.model import build_model
    from codecflow.training.loop import load_checkpoint

    ckpt = Path(run_dir) / "checkpoint.pt"
    if not ckpt.is_file():
        raise SystemExit(f"no checkpoint at {ckpt}: train first")
    state = load_checkpoint(ckpt)
    cfg = state["config"]
    model = build_model(cfg["arch"])
    model.load_state_dict(state["model"])
    out = Path(out)
    root = W.repo_root()

    def rel(d: str) -> str:
        head, _, tail = d.partition(" ")
        try:
            head = os.path.relpath(head, root) if os.path.isabs(head) else head
        except ValueError:
            pass
        return (head + " " + tail).strip()

    training = {
        "data": list(dict.fromkeys(rel(d) for d in cfg.get("data_sets", []))),
        "command": cfg.get("commands", []),
        "steps": int(state["step"]), "device": state.get("device", "cpu") +
        (f" ({cfg.get('threads')} thread)" if cfg.get("threads") else ""),
        "hours": round(float(state["elapsed"]) / 3600, 3), "crop": cfg["crop"],
        "batch": cfg["batch"], "lr": cfg["lr"], "decay_at": cfg.get("decay_at", []),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"), "export_command": _command(),
    }
    if cfg.get("oversampled"):  # learned-intra's second model (its oversampled mode)
        training["oversampled"] = True
        training["init_from"] = cfg.get("init_from")
        return W.save_weights(model, out, training, codec=W.OVERSAMPLED_KEY)
    return W.save_weights(model, out, training)


def _own_argv(argv: list | None) -> list:
    """This command's own options (for the worker ranks), also when it was started as
    ``codecflow [global options] train image ...``."""
    raw = list(sys.argv[1:] if argv is None else argv)
    for i in range(len(raw) - 1):
        if raw[i] == "train" and raw[i + 1] == "image":
            return raw[i + 2:]
    return raw


def run(args, argv: list | None = None) -> int:
    if args.add_tables:
        from codecflow.codecs.learned import weights as W

        entry = W.add_tables(args.add_tables)
        print(f"rewrote {args.add_tables} with coding tables: sha256 {entry['sha256']}")
        return 0
    if args.export:
        entry = export(args.run_dir, args.export)
        print(f"exported {args.export}: {entry['bytes']} bytes, sha256 {entry['sha256']}, "
              f"{entry['training']['steps']} steps, {entry['training']['hours']} h")
        return 0
    from codecflow.training.datasets import load_training_images, synthetic_images
    from codecflow.training.loop import train

    cfg = _config(args)
    procs = max(1, int(args.procs))
    main_rank = args.rank == 0
    if cfg["batch"] % procs:
        raise SystemExit(f"--batch {cfg['batch']} must be a multiple of --procs {procs}")
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    if args.synthetic:
        images, sets = synthetic_images(32, max(160, cfg["crop"] + 32)), ["synthetic"]
    else:
        t0 = time.time()
        try:
            images, sets = load_training_images(args.data, extra=not args.no_extra_data)
        except FileNotFoundError as e:
            print(f"error: {e} (pass --data, or --synthetic for a smoke test)", file=sys.stderr)
            return 2
        if main_rank:
            print(f"loaded {len(images)} training images in {time.time() - t0:.1f} s from "
                  f"{', '.join(sets)}", flush=True)
    from codecflow.training.parallel import Group, free_port, spawn_workers

    workers = []
    port = args.dist_port
    if procs > 1 and main_rank:
        port = free_port()
        workers = spawn_workers(procs, port, _own_argv(argv))  # before pinning: they
        # inherit this process's CPU set and each pin themselves to their own CPU of it
    if procs > 1:
        from codecflow.training.parallel import pin_to_core

        cpu = pin_to_core(args.rank, procs)
        if main_rank:
            print(f"{procs} data-parallel processes" +
                  (f", rank 0 pinned to CPU {cpu}" if cpu is not None else ""), flush=True)
    try:
        group = Group(args.rank, procs, port)
        try:
            res = train(cfg, images, sets, group=group)
        finally:
            group.close()
    finally:
        for w in workers:
            try:
                w.wait(timeout=60)
            except Exception:
                w.kill()
        if affinity is not None and procs > 1:
            os.sched_setaffinity(0, affinity)  # run() may be called in-process (tests)
    if main_rank:
        print(f"stopped at step {res['step']} ({res['elapsed'] / 3600:.2f} h)" +
              ("" if procs == 1 else
               f"; replicas identical: {'yes' if res['replicas_identical'] else 'NO'}"))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m codecflow.training.image",
                                description="train / resume / export the learned-intra model")
    add_arguments(p)
    return run(p.parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())

"""The codecflow command line: run | validate | decode | stage | train | eval.

`python run_pipeline.py CONFIG` is the same as `codecflow run CONFIG`.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from codecflow.errors import CodecflowError
from codecflow.pipeline.stage import setup_logging

log = logging.getLogger("codecflow")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="pipeline config (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set codec.q=40 (repeatable)")


def cmd_run(args) -> int:
    from codecflow.pipeline.config import load_config  # noqa: PLC0415
    from codecflow.pipeline.supervisor import Supervisor  # noqa: PLC0415

    setup_logging("pipeline")
    cfg = load_config(args.config, args.overrides)
    return Supervisor(cfg).run()


def cmd_validate(args) -> int:
    from codecflow.pipeline.config import load_config  # noqa: PLC0415
    from codecflow.pipeline.sources import source_class  # noqa: PLC0415

    from codecflow.pipeline.preflight import check_environment  # noqa: PLC0415

    cfg = load_config(args.config, args.overrides)
    check_environment(cfg)  # output folder writable, hosts resolve, ports free
    source = source_class(cfg.source_type)(cfg.source_config, cfg.mode)  # opens: checks inputs
    n = 0
    for stream in source.streams():
        n += 1
        if n <= 3:
            i = stream.info
            print(f"  stream {stream.name}: {i.width}x{i.height} {i.pix_fmt} views={i.views} "
                  f"fps={i.fps:g} frames={stream.total if stream.total is not None else '?'}")
        if source.live or n > 50:
            break
    source.close()
    print(f"{args.config}: OK — source {cfg.source_type} ({cfg.mode}), codec {cfg.codec.name} "
          f"q={cfg.codec.q}, {cfg.unit_kind} units, {cfg.workers} worker(s), "
          f"output {cfg.output.dir}")
    return 0


def cmd_stage(args) -> int:
    from codecflow.pipeline.config import load_config  # noqa: PLC0415
    from codecflow.pipeline.transport import resolve_endpoints  # noqa: PLC0415

    setup_logging(args.name if args.name != "encode" else f"encode-{args.worker}")
    cfg = load_config(args.config, args.overrides)
    endpoints = resolve_endpoints(cfg.transport)
    if args.name == "source":
        from codecflow.stages.source_stage import run_source_stage as run  # noqa: PLC0415
    elif args.name == "sink":
        from codecflow.stages.sink_stage import run_sink_stage as run  # noqa: PLC0415
    else:
        from codecflow.stages.encode import run_encode_stage  # noqa: PLC0415

        def run(cfg, endpoints):
            return run_encode_stage(cfg, endpoints, args.worker)
    code = run(cfg, endpoints)
    # The stage is done: a late stop signal must not kill the interpreter while it shuts down
    # (Python restores the default handlers then, but keeps "ignore").
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    return code


def cmd_keys(args) -> int:
    import os  # noqa: PLC0415

    from codecflow.errors import ConfigError  # noqa: PLC0415
    from codecflow.pipeline.transport import make_keys  # noqa: PLC0415

    if os.path.exists(args.folder) and (not os.path.isdir(args.folder) or
                                        os.listdir(args.folder)):
        raise ConfigError(f"keys: {args.folder} exists and is not an empty folder; give a new "
                          f"folder (a key set in use on other hosts is never replaced)")
    folder = make_keys(args.folder)
    print(f"CURVE keys written to {folder} (server.key_secret, client.key_secret; readable by "
          f"you only). Give every host of the pipeline a copy and set transport.keys: {folder}")
    return 0


def cmd_decode(args) -> int:
    from codecflow.stages.decode import decode_paths  # noqa: PLC0415

    if args.threads:
        import torch  # noqa: PLC0415 - decode is a stage that may run learned codecs

        torch.set_num_threads(args.threads)
    max_layer = 0 if args.base_only else args.max_layer
    results = decode_paths(args.input, args.output, args.reference, args.device, args.format,
                           strict=args.strict, max_layer=max_layer, side_info=args.side_info)
    failed = False
    for r in results:
        line = (f"{r['file']}: {r['codec']} q={r['q']} {r['frames']} frames, {r['bytes']} bytes, "
                f"{r['bpp']:.4f} bpp, {r['kbps']:.1f} kbit/s")
        if "psnr_rgb" in r:
            line += (f", PSNR-Y {r['psnr_y']:.3f} dB, PSNR-YUV {r['psnr_yuv']:.3f} dB, "
                     f"PSNR-RGB {r['psnr_rgb']:.3f} dB")
        print(line)
        if "side_info" in r:
            si = r["side_info"]
            counts = ", ".join(f"{n} {status}" for status, n in sorted(si["pictures"].items()))
            print(f"  side information from {si['file']}: {counts or 'no pictures'}")
            if set(si["pictures"]) - {"refined"}:
                print(f"  warning: {sum(n for s, n in si['pictures'].items() if s != 'refined')}"
                      f" picture(s) decoded without side information"
                      + (f" ({si['side_stream_error']})" if si["side_stream_error"] else ""),
                      file=sys.stderr)
        if r["rounding_mismatches"]:
            print(f"  warning: {r['rounding_mismatches']} picture(s) differ from the encoder's "
                  f"by rounding only (symbols verified); see the log above", file=sys.stderr)
        if not r["complete"]:
            print(f"  warning: {r['status']}", file=sys.stderr)
            failed = failed or args.strict
        if r["frames"] == 0:
            print(f"  error: {r['file']}: nothing decodable", file=sys.stderr)
            failed = True
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 1 if failed else 0


def cmd_train(args) -> int:
    return args.train_run(args)


def cmd_eval(args) -> int:
    return args.eval_run(args)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """`command`: the sub-command about to run; heavy sub-parsers (train: torch) are only
    built for it, so `codecflow stage source` never imports torch."""
    p = argparse.ArgumentParser(prog="codecflow", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a pipeline")
    _add_config_args(r)
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check a config (and open its input) without running")
    _add_config_args(v)
    v.set_defaults(func=cmd_validate)

    d = sub.add_parser("decode", help="decode .cfl file(s) to YUV or PNG")
    d.add_argument("input", help=".cfl file or folder of .cfl files")
    d.add_argument("--output", "-o", help="OUT.yuv, or a folder (PNG for image streams)")
    d.add_argument("--reference", "-r", help="source file/folder: also print PSNR against it")
    d.add_argument("--format", choices=("auto", "yuv", "png"), default="auto",
                   help="output pictures: auto = .yuv for YUV streams, PNG for image streams")
    d.add_argument("--device", default="cpu", help="learned codecs: cpu or cuda")
    d.add_argument("--json", help="also write the results to this JSON file")
    d.add_argument("--max-layer", type=int, default=None, metavar="L",
                   help="decode layers 0..L only (layered codecs); higher-layer records are "
                        "skipped unread")
    d.add_argument("--base-only", action="store_true", help="same as --max-layer 0")
    d.add_argument("--threads", type=int, default=0,
                   help="learned codecs: CPU threads (0 = library default); any count decodes "
                        "to the same pictures")
    d.add_argument("--side-info", metavar="OTHER.cfl",
                   help="learned-stereo-si / learned-intra mono stream: refine each picture "
                        "with the other camera's stream (same frame indexes)")
    d.add_argument("--strict", action="store_true",
                   help="exit non-zero when a file is incomplete (cut short or corrupt), and "
                        "refuse a picture whose reconstruction CRC differs even when its "
                        "decoded symbols match")
    d.set_defaults(func=cmd_decode)

    s = sub.add_parser("stage", help="run one stage of a pipeline (for multi-host setups)")
    s.add_argument("name", choices=("source", "encode", "sink"))
    s.add_argument("--config", required=True, help="pipeline config (YAML)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    s.add_argument("--worker", type=int, default=0, help="encode worker index")
    s.set_defaults(func=cmd_stage)

    k = sub.add_parser("keys", help="make a CURVE key set for stages started alone on several "
                                    "hosts (transport.keys)")
    k.add_argument("folder", help="folder to write the keys to (made private)")
    k.set_defaults(func=cmd_keys)

    t = sub.add_parser("train", help="train a learned codec (resumable)")
    tsub = t.add_subparsers(dest="model", required=True)
    ti = tsub.add_parser("image", help="the learned-intra image codec")
    if command == "train":
        from codecflow.training import image as train_image  # noqa: PLC0415 - imports torch

        train_image.add_arguments(ti)
        ti.set_defaults(func=cmd_train, train_run=train_image.run)
    ts = tsub.add_parser("stereo", help="learned-stereo's conditional coder (cached latents)")
    if command == "train":
        from codecflow.training import stereo as train_stereo  # noqa: PLC0415

        train_stereo.add_arguments(ts)
        ts.set_defaults(func=cmd_train, train_run=train_stereo.run)
    tsi = tsub.add_parser("stereo-si", help="learned-stereo-si's side-information refiner "
                                            "(cached decoded pictures)")
    if command == "train":
        from codecflow.training import side_info as train_side_info  # noqa: PLC0415

        train_side_info.add_arguments(tsi)
        tsi.set_defaults(func=cmd_train, train_run=train_side_info.run)
    tv = tsub.add_parser("video", help="learned-video's P-frame coder (cached latents)")
    if command == "train":
        from codecflow.training import video as train_video  # noqa: PLC0415

        train_video.add_arguments(tv)
        tv.set_defaults(func=cmd_train, train_run=train_video.run)

    e = sub.add_parser("eval", help="rate-distortion sweep, BD-rate table and RD plot")
    if command == "eval":
        from codecflow.eval import cli as eval_cli  # noqa: PLC0415

        eval_cli.add_arguments(e)
        e.set_defaults(func=cmd_eval, eval_run=eval_cli.run)
    return p


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `codecflow CONFIG.yaml` is accepted as `codecflow run CONFIG.yaml`
    if argv and argv[0].endswith((".yaml", ".yml")):
        argv = ["run", *argv]
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CodecflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

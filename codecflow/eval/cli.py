"""``codecflow eval``: RD sweeps of one or more codecs, BD-rate tables and an RD plot.

    codecflow eval --codec jpeg --codec webp --codec x265-intra --q 8,16,24,32,40,48,56 \\
                   --input ../shared/data/images/kodak --out runs/eval_kodak

writes ``OUT/rd.json`` (every sweep, the BD table), ``OUT/bdrate.md``, ``OUT/rd.png`` and one
folder per codec (its own rd.json and the .cfl streams measured), and prints the table.
``python -m codecflow.eval.cli ...`` does the same.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from codecflow.codecs import registry
from codecflow.errors import CodecflowError, ConfigError
from codecflow.eval import bdrate, plot, rd

DEFAULT_QS = "8,16,24,32,40,48,56"
METRICS = ("psnr_rgb", "psnr_yuv", "psnr_y")
PUBLISHED_REL = Path("..") / "shared" / "anchors" / "kodak"


def parse_qs(text: str) -> list[int]:
    """"8,16,24" / "8-56:8" / "0..63:9" / mixes of them -> sorted unique list of q in 0..63."""
    out = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:(?:-|\.\.)(\d+)(?::(\d+))?)?", part)
        if not m:
            raise ConfigError(f"--q: cannot parse {part!r}; use e.g. 8,16,24 or 8-56:8")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        step = int(m.group(3)) if m.group(3) is not None else 1
        if step < 1 or b < a:
            raise ConfigError(f"--q: bad range {part!r} (need start <= end, step >= 1)")
        out.extend(range(a, b + 1, step))
    bad = [q for q in out if not 0 <= q <= 63]
    if bad:
        raise ConfigError(f"--q: q must be in 0..63, got {bad}")
    if not out:
        raise ConfigError("--q: no q values given")
    return sorted(set(out))


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_params(items, codecs: list) -> dict:
    """["x264:preset=medium", "threads=2"] -> {codec: {key: value}} (no codec: all codecs)."""
    out = {c: {} for c in codecs}
    for item in items or []:
        m = re.fullmatch(r"(?:([^:=]+):)?([A-Za-z_][\w-]*)=(.*)", item)
        if not m:
            raise ConfigError(f"--param: cannot parse {item!r}; use KEY=VALUE or CODEC:KEY=VALUE")
        codec, key, val = m.groups()
        if codec is not None and codec not in out:
            raise ConfigError(f"--param {item!r}: codec {codec!r} is not swept "
                              f"(swept: {', '.join(codecs)})")
        for c in ([codec] if codec else codecs):
            out[c][key] = _value(val)
    return out


def default_published() -> Path | None:
    """../shared/anchors/kodak relative to the repository root or the working directory."""
    root = Path(__file__).resolve().parents[2]
    for base in (root, Path.cwd()):
        p = (base / PUBLISHED_REL).resolve()
        if p.is_dir():
            return p
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--codec", action="append", required=True, metavar="NAME",
                        help="codec to sweep (repeatable, or comma-separated)")
    parser.add_argument("--q", default=DEFAULT_QS, metavar="LIST",
                        help=f"q values 0..63: '8,16,24' or ranges '8-56:8' "
                             f"(default {DEFAULT_QS})")
    parser.add_argument("--input", action="append", required=True, metavar="PATH",
                        help="image file/folder or NAME_WxH_FPS.yuv file/folder (repeatable)")
    parser.add_argument("--out", default="out/eval", metavar="DIR",
                        help="output folder (default out/eval)")
    parser.add_argument("--anchor", action="append", default=None, metavar="CODEC",
                        help="BD-rate reference: a swept codec or published:NAME (repeatable; "
                             "default jpeg when swept)")
    parser.add_argument("--published", default=None, metavar="DIR",
                        help="folder of published anchor curves (CompressAI json); default "
                             "../shared/anchors/kodak when it exists and the inputs are "
                             "images; 'none' to disable")
    parser.add_argument("--device", default="cpu", help="device for learned codecs (cpu, cuda)")
    parser.add_argument("--frames", type=int, default=None, metavar="N",
                        help="code at most N frames of each .yuv sequence")
    parser.add_argument("--gop", type=int, default=8, metavar="N",
                        help="GOP size for GOP codecs on sequences (default 8)")
    parser.add_argument("--metric", default="psnr_rgb", choices=METRICS,
                        help="quality metric for BD-rates and the plot (default psnr_rgb)")
    parser.add_argument("--param", action="append", default=None, metavar="[CODEC:]KEY=VALUE",
                        help="codec parameter, e.g. x264:preset=medium (repeatable)")
    parser.add_argument("--matrix", default="bt709", choices=("bt709", "bt601"),
                        help="colour matrix of the inputs (default bt709)")
    parser.add_argument("--image-range", default="full", choices=("full", "limited"),
                        help="YCbCr range used when coding RGB images (default full)")
    parser.add_argument("--yuv-range", default="limited", choices=("full", "limited"),
                        help="range of .yuv inputs (default limited)")
    parser.add_argument("--discard-streams", action="store_true",
                        help="delete the .cfl files after measuring them")
    parser.add_argument("--quiet", action="store_true", help="no per-point progress lines")


def _fmt_cell(c: dict | None) -> str:
    if c is None:
        return "—"
    if c["bd_rate"] is None:
        return "n/a"
    psnr = "" if c["bd_psnr"] is None else f" ({c['bd_psnr']:+.2f} dB)"
    return f"{c['bd_rate']:+.1f} %{psnr}"


def _table(rows: list, tests: list, anchors: list, by_anchor: bool = False) -> list[str]:
    """Rows = tested codecs, columns = anchors (or the transpose with by_anchor)."""
    idx = {(r["test"], r["anchor"]): r for r in rows}
    if by_anchor:
        lines = ["| anchor | " + " | ".join(tests) + " |", "|---|" + "---|" * len(tests)]
        for a in anchors:
            lines.append(f"| {a} | " + " | ".join(_fmt_cell(idx.get((t, a))) for t in tests)
                         + " |")
    else:
        lines = ["| codec | " + " | ".join(f"vs {a}" for a in anchors) + " |",
                 "|---|" + "---|" * len(anchors)]
        for t in tests:
            lines.append(f"| {t} | " + " | ".join(_fmt_cell(idx.get((t, a))) for a in anchors)
                         + " |")
    notes = sorted({f"{r['test']} vs {r['anchor']}: {r['reason']}" for r in rows
                    if r["bd_rate"] is None and r.get("reason")})
    if notes:
        lines.append("")
        lines += [f"- n/a: {n}" for n in notes]
    return lines


def bd_table(curves: dict, anchors: list, published: dict, metric: str) -> list[dict]:
    rows = []
    allc = dict(curves)
    allc.update({k: (v["bpp"], v[metric]) for k, v in published.items()})
    for a in list(anchors) + [p for p in published if p not in anchors]:
        for t in curves:
            if t == a:
                continue
            res = bdrate.compare(allc[a][0], allc[a][1], curves[t][0], curves[t][1])
            rows.append({"test": t, "anchor": a, **res})
    return rows


def render_markdown(results: dict, curves: dict, rows: list, anchors: list, published: dict,
                    metric: str, inputs: list) -> str:
    tests = list(curves)
    out = [f"# RD evaluation ({metric})", "",
           f"Inputs: {', '.join(str(i) for i in inputs)}", "",
           f"BD-rate of each codec against each anchor over the overlapping {metric} range "
           f"(negative = fewer bits for the same quality; BD-PSNR in brackets). Rate = .cfl "
           f"file bytes (headers and record framing included).", ""]
    if anchors:
        out += ["## Against swept / chosen anchors", ""] + _table(rows, tests, anchors) + [""]
    pub = [p for p in published if p not in anchors]
    if pub:
        out += ["## Against published curves", "",
                "Published curves are means over the 24 Kodak images; these numbers mean "
                "something only when --input is the Kodak set. Each cell: the column's codec "
                "against the row's published curve.", ""]
        out += _table(rows, tests, pub, by_anchor=True) + [""]
    out += ["## Points", ""]
    for name, res in results.items():
        out += [f"### {name}" + (f" {res['params']}" if res.get("params") else ""), "",
                "| q | bpp | PSNR-RGB | PSNR-YUV | PSNR-Y | enc s/frame | dec s/frame |",
                "|---|---|---|---|---|---|---|"]
        for p in res["points"]:
            out.append(f"| {p['q']} | {p['bpp']:.4f} | {p['psnr_rgb']:.2f} | {p['psnr_yuv']:.2f} "
                       f"| {p['psnr_y']:.2f} | {p['enc_s']:.4f} | {p['dec_s']:.4f} |")
        out.append("")
    return "\n".join(out)


def run(args) -> int:
    codecs = []
    for item in args.codec:
        for c in str(item).split(","):
            c = c.strip()
            if c and c not in codecs:
                codecs.append(c)
    if not codecs:
        raise ConfigError("--codec: no codec given")
    for c in codecs:
        registry.spec(c)  # unknown codec -> CodecError naming the known ones
    qs = parse_qs(args.q)
    params = parse_params(args.param, codecs)
    metric = args.metric
    if args.gop is not None and args.gop < 1:
        raise ConfigError(f"--gop must be >= 1, got {args.gop}")
    if args.frames is not None and args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")

    if args.published is None:
        # published curves are Kodak image results: not a default for video sequences
        images_only = all(s.kind == "image" for s in rd.find_sources(args.input, args.frames))
        pub_dir = default_published() if images_only else None
    elif str(args.published).lower() in ("", "none", "off"):
        pub_dir = None
    else:
        pub_dir = Path(args.published)
        if not pub_dir.is_dir():
            raise ConfigError(f"--published: {pub_dir} is not a folder")
    published = plot.load_published(pub_dir, metric) if pub_dir else {}

    anchors = list(args.anchor) if args.anchor else (["jpeg"] if "jpeg" in codecs else [])
    for a in anchors:
        if a not in codecs and a not in published:
            known = codecs + sorted(published)
            raise ConfigError(f"--anchor {a!r} is neither a swept codec nor a published curve "
                              f"(available: {', '.join(known)})")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = None if args.quiet else (lambda m: print(m, flush=True))
    results, curves = {}, {}
    for c in codecs:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", c)
        res = rd.sweep(c, qs, args.input, out / safe, device=args.device, params=params[c],
                       frames=args.frames, gop=args.gop, matrix=args.matrix,
                       image_range=args.image_range, yuv_range=args.yuv_range,
                       keep_streams=not args.discard_streams, log=log)
        results[c] = res
        curves[c] = rd.curve(res, metric)

    rows = bd_table(curves, anchors, published, metric)
    inputs = results[codecs[0]]["inputs"]
    md = render_markdown(results, curves, rows, anchors, published, metric, args.input)
    (out / "bdrate.md").write_text(md + "\n")
    summary = {"metric": metric, "qs": qs, "inputs": inputs, "anchors": anchors,
               "published_dir": str(pub_dir) if pub_dir else None,
               "codecs": results, "bdrate": rows}
    with open(out / "rd.json", "w") as f:
        json.dump(summary, f, indent=1)
    # Only published curves in the plot when they fit the inputs' kind (images, RGB metric).
    plot_pub = published if metric == "psnr_rgb" else {}
    plot.plot_rd(curves, out / "rd.png", published=plot_pub, metric=metric,
                 title=f"RD: {', '.join(codecs)} ({len(inputs)} input(s))")
    print(md)
    print(f"\nwrote {out / 'rd.json'}, {out / 'bdrate.md'}, {out / 'rd.png'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="codecflow eval", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except CodecflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())

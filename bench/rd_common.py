"""What the RD benchmarks share: running a project command, BD tables in markdown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list) -> None:
    """``python CMD...`` in the repository root; exits naming the command when it fails."""
    p = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")


def bd_rows(table: dict) -> list:
    """{"TEST vs ANCHOR[ (METRIC)]": bdrate.compare(...)} -> markdown rows (without header):
    | test | anchor | [metric |] BD-rate | BD-PSNR |."""
    rows = []
    for key, v in table.items():
        pair, _, metric = key.partition(" (")
        t, a = pair.split(" vs ")
        br = "n/a" if v.get("bd_rate") is None else f"{v['bd_rate']:+.1f} %"
        bp = "n/a" if v.get("bd_psnr") is None else f"{v['bd_psnr']:+.2f} dB"
        cells = [t, a] + ([metric.rstrip(")")] if metric else []) + [br, bp]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def q_lists(defaults: dict, overrides: list) -> dict:
    """{codec: "q,q,..."}: ``defaults`` with the ``--q CODEC=Q,Q,...`` items applied."""
    qs = dict(defaults)
    for item in overrides:
        name, _, vals = item.partition("=")
        qs[name] = vals
    return qs


KEEP_HELP = ("take the points of the codecs not run from the existing OUT.json (measured on "
             "the same data, e.g. after changing one codec); said in the table")


def keep_points(out: str, results: dict, same: dict) -> list:
    """--keep: add to ``results`` the points of codecs it lacks from ``OUT.json``, whose keys
    in ``same`` (e.g. the pairs) must hold the same values. -> the codecs taken."""
    path = Path(out).with_suffix(".json")
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    for key, value in same.items():
        if json.loads(json.dumps(old.get(key))) != json.loads(json.dumps(value)):
            raise SystemExit(f"--keep: {path} was measured with another {key}")
    kept = [c for c in old["points"] if c not in results]
    for c in kept:
        results[c] = old["points"][c]
    return kept


def kept_line(kept: list) -> list:
    """The markdown line that says which codecs' points were kept (none: no line)."""
    return ([f"Points of {', '.join(kept)} kept from the previous run (their codecs did not "
             f"change).", ""] if kept else [])

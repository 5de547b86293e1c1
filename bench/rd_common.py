"""What the RD benchmarks share: running a project command, BD tables in markdown."""

from __future__ import annotations

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

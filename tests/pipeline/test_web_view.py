"""The live web view in a real headless browser (Chromium from the system packages): during a
paced run the page draws its plots from /stats.json; /metrics serves Prometheus text."""

import json
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from codecflow.pipeline.transport import free_tcp_port
from tests.conftest import ROOT

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


def _get(url: str):
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.read()


def test_stats_json_and_metrics_during_a_run_then_plots_in_chromium(tmp_path):
    port = free_tcp_port()
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "run_pipeline.py", "configs/demo_video.yaml", "--set",
         f"output.dir={out}", "--set", "codec.name=x264", "--set", "source.realtime=true",
         "--set", "source.fps=10", "--set", "source.frames=400", "--set",
         f"stats.http_port={port}", "--set", "stats.interval=0.3"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log", "w"))
    try:
        deadline, state = time.time() + 60, {}
        while time.time() < deadline:
            try:
                state = json.loads(_get(f"http://127.0.0.1:{port}/stats.json"))
            except OSError:
                state = {}
            pts = state.get("streams", {}).get("synthetic", {}).get("t", [])
            if len(pts) >= 5:
                break
            time.sleep(0.3)
        assert len(pts) >= 5, "no live numbers on /stats.json"
        h = state["streams"]["synthetic"]
        assert all(v is not None and v > 0 for v in h["kbps"][-3:])
        metrics = _get(f"http://127.0.0.1:{port}/metrics").decode()
        assert "codecflow_kbps " in metrics and "codecflow_psnr_yuv " in metrics
        page = _get(f"http://127.0.0.1:{port}/").decode()
        assert "/plotly.min.js" in page
        assert len(_get(f"http://127.0.0.1:{port}/plotly.min.js")) > 100_000
        if CHROMIUM is None:
            pytest.skip("no Chromium on this machine (install the system package 'chromium' "
                        "to check the page in a real browser)")
        shot = tmp_path / "view.png"
        base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--window-size=1400,700", "--virtual-time-budget=4000"]
        taken = subprocess.run(base + [f"--screenshot={shot}", f"http://127.0.0.1:{port}/?once"],
                               capture_output=True, text=True, timeout=120)
        dom = subprocess.run(base + ["--dump-dom", f"http://127.0.0.1:{port}/?once"],
                             capture_output=True, text=True, timeout=120).stdout
        assert proc.poll() is None, "the run ended before the browser was done: make it longer"
    finally:
        proc.send_signal(2)  # Ctrl-C: the view has been checked; the run drains and stops
        proc.wait(timeout=120)
    assert proc.returncode == 0, (tmp_path / "log").read_text()[-2000:]
    assert shot.is_file(), taken.stderr[-2000:]
    assert dom.count('class="main-svg"') >= 4, dom[-2000:]  # the four plots, drawn by Plotly
    assert "[synthetic]" in dom or "done:" in dom
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (700, 1400)
    # Plotly's first trace colour (#1f77b4) drawn in the plot area
    blue = np.all(np.abs(img.astype(int) - (180, 119, 31)) < 30, axis=-1)
    assert blue[90:].sum() > 200, blue.sum()

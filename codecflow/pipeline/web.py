"""The live web view (``stats.http_port``): served by the supervisor on 127.0.0.1.

* ``/`` (``/?once`` draws once, without polling): a page with per-stream plots of kbit/s, PSNR, fps, queue depth and drops, drawn with
  Plotly (the JavaScript bundled in the ``plotly`` package), updated by polling ``/stats.json``
  every ``stats.interval`` seconds.
* ``/stats.json``: the snapshots so far, per stream (the latest STREAMS streams, at most
  HISTORY points each), the latest
  snapshot, and the run's summary once it has ended.
* ``/metrics``: the latest numbers as Prometheus text.

The numbers are the sink's snapshots (the same the terminal shows), relayed to the supervisor.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HISTORY = 4000  # points kept per stream
STREAMS = 8  # streams kept (the latest of a batch of files)
SERIES = ("kbps", "psnr_yuv", "psnr_rgb", "fps", "queue", "inflight", "dropped", "done")
METRICS = ("fps", "kbps", "bpp", "psnr_yuv", "psnr_rgb", "queue", "inflight", "workers",
           "dropped", "done")


def prometheus_text(snapshot: dict) -> str:
    """A stats snapshot as Prometheus text (``codecflow_<key> value`` per known number)."""
    lines = []
    for key in METRICS:
        v = snapshot.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lines.append(f"codecflow_{key} {float(v)}")
    return "\n".join(lines) + "\n"


def plotly_js_path() -> str | None:
    """plotly.min.js as the ``plotly`` package ships it (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, "package_data", "plotly.min.js")
        if os.path.isfile(path):
            return path
    return None


class WebView:
    def __init__(self, port: int, interval: float, title: str, host: str = "127.0.0.1"):
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.history: dict = {}
        self.latest: dict = {}
        self.summary: dict | None = None
        self.interval = interval
        self.title = title
        self.js = plotly_js_path()
        view = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path == "/":
                    self._send(200, "text/html; charset=utf-8", view.page().encode())
                elif path == "/stats.json":
                    self._send(200, "application/json", json.dumps(view.state()).encode())
                elif path == "/metrics":
                    with view.lock:
                        body = prometheus_text(view.latest)
                    self._send(200, "text/plain; version=0.0.4", body.encode())
                elif path == "/plotly.min.js" and view.js:
                    with open(view.js, "rb") as f:
                        self._send(200, "application/javascript", f.read())
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, ctype: str, body: bytes):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, snap: dict) -> None:
        name = snap.get("stream")
        with self.lock:
            self.latest = dict(snap)
            if not name or name == "-" or snap.get("state") == "loading":
                return
            if name not in self.history and len(self.history) >= STREAMS:
                del self.history[next(iter(self.history))]  # a batch: the latest streams
            h = self.history.setdefault(name, {"t": [], **{k: [] for k in SERIES},
                                               "total": snap.get("total")})
            h["t"].append(round(time.monotonic() - self.t0, 3))
            for k in SERIES:
                h[k].append(snap.get(k))
            if len(h["t"]) > HISTORY:
                for k in ("t", *SERIES):
                    del h[k][0]

    def set_summary(self, summary: dict) -> None:
        with self.lock:
            self.summary = summary

    def state(self) -> dict:
        with self.lock:
            return {"title": self.title, "latest": self.latest, "streams": self.history,
                    "summary": self.summary}

    def page(self) -> str:
        return PAGE.replace("__TITLE__", self.title).replace(
            "__INTERVAL_MS__", str(int(1000 * self.interval))).replace(
            "__PLOTLY__", "/plotly.min.js" if self.js else "")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>codecflow: __TITLE__</title>
<script src="__PLOTLY__" defer></script>
<style>
body { font-family: sans-serif; margin: 12px 20px; color: #222; }
h1 { font-size: 20px; margin: 4px 0; }
#status { font-family: monospace; margin: 6px 0 12px; white-space: pre; }
.stream h2 { font-size: 16px; margin: 14px 0 2px; }
.plots { display: grid; grid-template-columns: repeat(4, 1fr); gap: 8px; }
.plot { height: 220px; }
#noplot { color: #a00; }
</style></head>
<body>
<h1>codecflow: __TITLE__</h1>
<div id="status">waiting for the first numbers...</div>
<div id="noplot"></div>
<div id="streams"></div>
<script>
const PLOTS = [
  ["kbit/s (x: seconds)", [["kbps", "kbit/s"]]],
  ["PSNR (dB)", [["psnr_yuv", "YUV"], ["psnr_rgb", "RGB"]]],
  ["fps", [["fps", "fps"]]],
  ["queue and drops", [["queue", "queue"], ["inflight", "in flight"], ["dropped", "dropped"]]],
];
// "/?once": draw the numbers so far and stop (a static snapshot, e.g. for a screenshot)
const ONCE = new URLSearchParams(location.search).has("once");
function fmt(x, d) { return (x === null || x === undefined) ? "-" : Number(x).toFixed(d); }
function status(st) {
  const s = st.latest || {};
  if (st.summary) {
    const m = st.summary;
    return `done: ${m.frames} frames, ${m.bytes} bytes, ${fmt(m.bpp, 4)} bpp, ` +
      `${fmt(m.kbps, 1)} kbit/s, PSNR-YUV ${fmt(m.psnr_yuv, 2)} dB, ` +
      (m.complete ? "complete" : "INCOMPLETE: " + (m.incomplete_reason || ""));
  }
  if (s.state === "loading") return `starting: loading ${s.codec} in ${s.n_workers} worker(s)...`;
  if (!s.stream) return "waiting for the first numbers...";
  return `[${s.stream}] ${s.done}/${s.total === null ? "?" : s.total} frames  ` +
    `${fmt(s.fps, 1)} fps  ${fmt(s.kbps, 1)} kbit/s  ${fmt(s.bpp, 4)} bpp  ` +
    `PSNR-YUV ${fmt(s.psnr_yuv, 2)} dB  queue ${s.queue}  in-flight ${s.inflight}  ` +
    `workers ${s.workers}  dropped ${s.dropped}`;
}
function ensure(name, i) {
  const id = "s" + i;
  if (!document.getElementById(id)) {
    const div = document.createElement("div");
    div.className = "stream"; div.id = id;
    div.innerHTML = `<h2></h2><div class="plots">` +
      PLOTS.map((p, k) => `<div class="plot" id="${id}p${k}"></div>`).join("") + `</div>`;
    div.querySelector("h2").textContent = name;
    document.getElementById("streams").appendChild(div);
  }
  return id;
}
async function tick() {
  try {
    const st = await (await fetch("/stats.json", {cache: "no-store"})).json();
    document.getElementById("status").textContent = status(st);
    if (typeof Plotly === "undefined") {
      document.getElementById("noplot").textContent =
        "plots need the plotly package (pip install plotly)";
    } else {
      Object.entries(st.streams).forEach(([name, h], i) => {
        const id = ensure(name, i);
        PLOTS.forEach(([title, series], k) => {
          const traces = series.map(([key, label]) => ({x: h.t, y: h[key], name: label,
            mode: "lines", type: "scatter"}));
          Plotly.react(id + "p" + k, traces, {title: {text: title, font: {size: 13}},
            margin: {l: 45, r: 10, t: 30, b: 40}, showlegend: series.length > 1,
            legend: {orientation: "h", y: -0.2}},
            {displayModeBar: false, staticPlot: true});
        });
      });
    }
    if (st.summary || ONCE) return;  // the run has ended: the page keeps its last numbers
  } catch (e) { /* the run has ended and the server is gone */ return; }
  setTimeout(tick, __INTERVAL_MS__);
}
window.addEventListener("load", tick);  // after plotly.min.js (deferred) has run
</script>
</body></html>
"""

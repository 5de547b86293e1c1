"""Live stats on the terminal: a rich panel with a progress bar on a TTY, one line per interval
otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time


def fmt_db(x) -> str:
    return "  -  " if x is None else f"{x:5.2f}"


class TerminalStats:
    def __init__(self, mode: str, interval: float):
        if mode == "auto":
            mode = "panel" if sys.stderr.isatty() else "line"
        self.mode = mode
        self.interval = interval
        self._last = 0.0
        self._live = None
        self._progress = None
        self._task = None
        if mode == "panel":
            from rich.console import Console  # noqa: PLC0415
            from rich.live import Live  # noqa: PLC0415
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.completed}/{task.total} frames"),
                                      TimeRemainingColumn())
            self._live = Live(self._progress, console=Console(stderr=True),
                              refresh_per_second=4, transient=False)
            self._live.start()

    def line(self, s: dict) -> str:
        prog = ""
        if s.get("total"):
            prog = f" {s['done']}/{s['total']} ({100.0 * s['done'] / s['total']:.0f}%)"
        return (f"[{s['stream']}]{prog} {s['fps']:6.1f} fps  {s['kbps']:9.1f} kbit/s  "
                f"{s['bpp']:.4f} bpp  PSNR-YUV {fmt_db(s['psnr_yuv'])} dB  "
                f"RGB {fmt_db(s['psnr_rgb'])} dB  queue {s['queue']}  in-flight {s['inflight']}"
                f"  workers {s['workers']}  dropped {s['dropped']}  "
                f"enc {1000 * s['encode_ms']:.0f} ms/frame  latency {1000 * s['latency']:.0f} ms")

    @staticmethod
    def panel_text(s: dict) -> str:
        """Two short rows (< 80 columns each) for the live panel; the stream name is escaped
        so that rich does not read ``[name]`` as markup."""
        from rich.markup import escape  # noqa: PLC0415

        return (f"{escape('[' + str(s['stream']) + ']')} {s['fps']:5.1f} fps "
                f"{s['kbps']:8.1f} kbit/s {s['bpp']:.4f} bpp  PSNR-YUV {fmt_db(s['psnr_yuv'])}"
                f" RGB {fmt_db(s['psnr_rgb'])} dB\n"
                f"  queue {s['queue']}  in-flight {s['inflight']}  workers {s['workers']}  "
                f"dropped {s['dropped']}  enc {1000 * s['encode_ms']:.0f} ms/f  "
                f"lat {s['latency']:.2f} s")

    def update(self, s: dict, force: bool = False) -> None:
        now = time.monotonic()
        if self.mode == "off" or (not force and now - self._last < self.interval):
            return
        self._last = now
        if self.mode == "line":
            print(self.line(s), file=sys.stderr, flush=True)
            return
        if s["stream"] == "-":  # no stream yet: no row that would never update
            return
        desc = self.panel_text(s)
        if self._task is None or self._progress.tasks[self._task].fields.get("stream") != \
                s["stream"]:
            self._task = self._progress.add_task(desc, total=s.get("total"), stream=s["stream"])
        self._progress.update(self._task, completed=s["done"], description=desc)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()

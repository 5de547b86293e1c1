"""Live stats on the terminal: a rich panel with a progress bar on a TTY, one line per interval
otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time


ROWS = 4  # stream rows the panel keeps (the latest streams of a batch)


def _count(done, total) -> str:
    return f"{done}/{total} frames" if total else f"{done} frames"


def fmt_db(x) -> str:
    return "  -  " if x is None else f"{x:5.2f}"


class TerminalStats:
    """``panel``: one progress row per stream, the latest ROWS streams (name, bar, frames, time
    left: under 80 columns)
    and, below, the current stream's numbers in two rows of under 80 columns; while the encode
    workers load their codec, a "starting" row; at the end, each stream's row and the totals as
    summary.json has them. ``line``: one line per interval. ``off``: nothing."""

    def __init__(self, mode: str, interval: float):
        if mode == "auto":
            mode = "panel" if sys.stderr.isatty() else "line"
        self.mode = mode
        self.interval = interval
        self._last = 0.0
        self._live = None
        self._progress = None
        self._tasks: dict = {}  # stream name -> (progress task, total frames or None)
        self._said = None
        if mode == "panel":
            from rich.console import Console, Group  # noqa: PLC0415
            from rich.live import Live  # noqa: PLC0415
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
            from rich.text import Text  # noqa: PLC0415

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                                      TextColumn("{task.fields[count]}"),
                                      TimeRemainingColumn())
            self._text = Text("")
            self._console = Console(stderr=True)
            self._live = Live(Group(self._progress, self._text), console=self._console,
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
    def stats_text(s: dict) -> str:
        """The current stream's numbers: two plain rows of under 80 columns."""
        return (f"{s['fps']:5.1f} fps {s['kbps']:9.1f} kbit/s {s['bpp']:.4f} bpp  PSNR-YUV "
                f"{fmt_db(s['psnr_yuv'])} RGB {fmt_db(s['psnr_rgb'])} dB\n"
                f"queue {s['queue']}  in-flight {s['inflight']}  workers {s['workers']}  "
                f"dropped {s['dropped']}  enc {1000 * s['encode_ms']:.0f} ms/f  "
                f"lat {s['latency']:.2f} s")

    @staticmethod
    def panel_text(s: dict) -> str:
        """The stream's name (escaped: rich must not read ``[name]`` as markup) and its
        numbers, as the panel shows them (rows of under 80 columns)."""
        return f"{_name(s['stream'])}\n{TerminalStats.stats_text(s)}"

    @staticmethod
    def loading_text(s: dict) -> str:
        n = s.get("n_workers", 1)
        return (f"starting: loading {s.get('codec', 'the codec')} in {n} encode "
                f"worker{'s' if n != 1 else ''}...")

    def update(self, s: dict, force: bool = False) -> None:
        now = time.monotonic()
        if self.mode == "off" or (not force and now - self._last < self.interval):
            return
        self._last = now
        loading = s.get("state") == "loading"
        if self.mode == "line":
            text = self.loading_text(s) if loading else self.line(s)
            if not (loading and text == self._said):  # the loading line once, not every tick
                print(text, file=sys.stderr, flush=True)
            self._said = text
            return
        if loading:
            if self._text.plain != self.loading_text(s):
                self._text.plain = self.loading_text(s)
                self._live.refresh()  # shown at once, however soon the workers are up
            return
        if s["stream"] == "-":  # no stream yet: no row that would never update
            return
        name = s["stream"]
        if name not in self._tasks:
            self._tasks[name] = (self._progress.add_task(_name(name), total=s.get("total"),
                                                         count=""), s.get("total"))
            while len(self._tasks) > ROWS:  # a batch of many files: the latest streams only
                old = next(iter(self._tasks))
                self._progress.remove_task(self._tasks.pop(old)[0])
        self._progress.update(self._tasks[name][0], completed=s["done"],
                              count=_count(s["done"], s.get("total")))
        self._text.plain = self.stats_text(s)

    @staticmethod
    def final_text(summary: dict) -> str:
        """The run's result as summary.json has it (two rows of under 80 columns)."""
        state = "complete" if summary.get("complete") else \
            f"INCOMPLETE: {summary.get('incomplete_reason') or 'see summary.json'}"
        return (f"done: {summary['frames']} frames, {summary['bytes']} bytes, "
                f"{summary['bpp']:.4f} bpp, {summary['kbps']:.1f} kbit/s, PSNR-YUV "
                f"{fmt_db(summary.get('psnr_yuv')).strip()} dB\n"
                f"{summary['elapsed_s']:.1f} s, {summary['fps']:.2f} fps, dropped "
                f"{summary['dropped']}, {state}")

    def final(self, summary: dict) -> None:
        """The last frame: each stream's row at its summary.json count (nothing left in
        flight), then the run's totals."""
        if self.mode == "off":
            return
        text = self.final_text(summary)
        if self.mode == "line":
            print(text, file=sys.stderr, flush=True)
            return
        for name, (task, total) in self._tasks.items():
            st = summary["streams"].get(name)
            if st is not None:
                self._progress.update(task, completed=st["frames"],
                                      count=_count(st["frames"], total))
        self._text.plain = text
        self.close()

    def close(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None


def _name(stream) -> str:
    from rich.markup import escape  # noqa: PLC0415

    name = str(stream)
    return escape("[" + (name if len(name) <= 22 else name[:21] + "…") + "]")

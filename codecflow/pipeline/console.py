"""The supervisor's view of the live stats: the terminal panel and the web view.

The sink sends its stats snapshots and, at the end, the run's summary to the supervisor over a
pipe (`StatsRelay`, JSON lines). The supervisor draws them: the terminal (`TerminalStats`) and,
with ``stats.http_port``, the web view (`web.WebView`). With the live panel, every stage's
stderr also comes through a pipe and is printed above the panel, line by line: one process owns
the screen, so log lines never land inside the panel.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading

STATS_FD_ENV = "CODECFLOW_STATS_FD"


class StatsRelay:
    """The sink's side: the TerminalStats interface, written to the supervisor's pipe."""

    def __init__(self, fd: int, interval: float):
        self.f = os.fdopen(fd, "w", buffering=1)
        self.interval = interval
        self._last = 0.0

    def _send(self, kind: str, data: dict) -> None:
        try:
            self.f.write(json.dumps({"kind": kind, "data": data}, default=float) + "\n")
        except (OSError, ValueError):  # the supervisor is gone: nothing to show
            pass

    def update(self, s: dict, force: bool = False) -> None:
        import time

        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            self._send("snapshot", s)

    def final(self, summary: dict) -> None:
        self._send("final", summary)

    def close(self) -> None:
        try:
            self.f.close()
        except OSError:
            pass


class _LineReader(threading.Thread):
    """Reads a pipe line by line into the shared queue as (tag, line)."""

    def __init__(self, stream, tag: str, out: queue.Queue):
        super().__init__(daemon=True)
        self.stream, self.tag, self.out = stream, tag, out

    def run(self):
        try:
            for line in iter(self.stream.readline, ""):
                self.out.put((self.tag, line.rstrip("\n")))
        except (OSError, ValueError):
            pass


class _ToCurrentStderr(logging.Handler):
    """The supervisor's own log lines, written to whatever sys.stderr is at the time (the live
    panel redirects it to print above itself)."""

    def emit(self, record):
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


class StatsView:
    """The supervisor's side: the terminal in ``mode`` (panel: it owns the screen; line; off)
    and, with ``http_port``, the web view."""

    def __init__(self, mode: str, interval: float, http_port: int | None = None,
                 title: str = "pipeline"):
        from codecflow.stages.sinks.terminal import TerminalStats

        self.lines: queue.Queue = queue.Queue()
        self.stats_r, self.stats_w = os.pipe()
        self.term = TerminalStats(mode, interval)
        self.owns_screen = self.term.mode == "panel"
        self.web = None
        if http_port:
            from codecflow.errors import ConfigError
            from codecflow.pipeline.web import WebView

            try:
                self.web = WebView(http_port, interval, title)
            except OSError as e:
                os.close(self.stats_r)
                os.close(self.stats_w)
                self.term.close()
                raise ConfigError(f"stats.http_port: cannot listen on 127.0.0.1:{http_port}: "
                                  f"{e.strerror or e}") from None
        self.final: dict | None = None
        self._readers: list = []
        root = logging.getLogger("codecflow")
        self._handlers = list(root.handlers)
        if self.owns_screen:
            fmt = self._handlers[0].formatter if self._handlers else None
            handler = _ToCurrentStderr()
            handler.setFormatter(fmt)
            root.handlers[:] = [handler]
        _LineReader(os.fdopen(self.stats_r, "r"), "stats", self.lines).start()

    def sink_env(self, env: dict) -> dict:
        env = dict(env)
        env[STATS_FD_ENV] = str(self.stats_w)
        return env

    def watch(self, name: str, stream) -> None:
        """A stage's stderr (a text pipe)."""
        r = _LineReader(stream, name, self.lines)
        r.start()
        self._readers.append(r)

    def pump(self) -> None:
        """Print waiting log lines (above the panel) and show the newest snapshot."""
        snap = None
        while True:
            try:
                tag, line = self.lines.get_nowait()
            except queue.Empty:
                break
            if tag != "stats":
                sys.stderr.write(line + "\n")
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("kind") == "snapshot":
                snap = msg["data"]
                if snap.get("state") == "loading":  # shown even when the workers are up soon
                    self.term.update(snap, force=True)
                if self.web is not None:
                    self.web.add(snap)
            elif msg.get("kind") == "final":
                self.final = msg["data"]
                if self.web is not None:
                    self.web.set_summary(self.final)
        if snap is not None:
            self.term.update(snap, force=True)

    def close_write_end(self) -> None:
        """After the sink started: only the sink holds the pipe's write end."""
        os.close(self.stats_w)

    def close(self) -> None:
        for r in self._readers:  # the stages have exited: their last lines are on the way
            r.join(timeout=2.0)
        self.pump()
        if self.final is not None:
            self.term.final(self.final)
        self.term.close()
        if self.web is not None:
            self.web.close()
        logging.getLogger("codecflow").handlers[:] = self._handlers

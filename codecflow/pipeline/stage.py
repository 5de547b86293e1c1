"""What every stage process shares: logging, stop signals, parent-death watch, exit codes."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

EXIT_OK = 0
EXIT_FAILED = 3  # the stage failed (message logged)

log = logging.getLogger("codecflow")


def setup_logging(stage: str, level: str | None = None) -> logging.Logger:
    level = level or os.environ.get("CODECFLOW_LOG", "INFO")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {stage:>9} %(levelname)s %(message)s",
                                           "%H:%M:%S"))
    root = logging.getLogger("codecflow")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    return root


class StopFlag:
    """Set by SIGINT/SIGTERM (first: drain; second: stop now) or when the parent dies."""

    def __init__(self, watch_parent: bool = True):
        self.event = threading.Event()
        self.hard = threading.Event()
        self.signal_count = 0
        self._parent = os.getppid()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if watch_parent and os.environ.get("CODECFLOW_SUPERVISED") == "1":
            threading.Thread(target=self._watch_parent, daemon=True).start()

    def _on_signal(self, signum, frame):
        self.signal_count += 1
        if self.signal_count >= 2:
            self.hard.set()
        self.event.set()

    def _watch_parent(self):
        while not self.hard.is_set():
            if os.getppid() != self._parent:
                log.warning("supervisor is gone; stopping")
                self.event.set()
                self.hard.set()
                return
            self.hard.wait(0.5)

    def is_set(self) -> bool:
        return self.event.is_set()

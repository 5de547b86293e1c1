"""The buffer between the source's reader thread and the dispatcher.

offline: lossless backpressure (the reader waits while the buffer is full).
live: the reader never waits; when the buffer is full the oldest pending *unit* is dropped and
counted (stream markers are never dropped), which keeps latency bounded. Frames a source skips
itself (a camera's capture thread, a paced source behind real time) are counted here too, per
stream.
"""

from __future__ import annotations

import collections
import threading


def _instants(item: tuple) -> int:
    """Frames (time instants: a stereo pair is one) of a queued unit
    ("unit", stream, frames, info, ...)."""
    return 1 if getattr(item[3], "unit_kind", None) == "pair" else len(item[2])


class UnitQueue:
    def __init__(self, capacity: int, live: bool):
        self.capacity = max(1, capacity)
        self.live = live
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self.dropped_units = 0
        self.dropped_by_stream: dict[str, int] = {}  # frames, per stream name (both kinds)
        self._capture_drops: dict[str, int] = {}
        self.closed = False

    def _units(self) -> int:
        return sum(1 for it in self._items if it[0] == "unit")

    def put(self, item: tuple, stop: threading.Event | None = None) -> bool:
        """Add an item; False for a unit refused because the queue was closed (stopping)."""
        with self._cond:
            if item[0] == "unit":
                if self.live:
                    while self._units() >= self.capacity:
                        for i, it in enumerate(self._items):
                            if it[0] == "unit":
                                del self._items[i]
                                self.dropped_units += 1
                                n = _instants(it)
                                self.dropped_by_stream[it[1]] = \
                                    self.dropped_by_stream.get(it[1], 0) + n
                                break
                else:
                    while self._units() >= self.capacity and not self.closed:
                        if stop is not None and stop.is_set():
                            return False
                        self._cond.wait(0.1)
                if self.closed:
                    return False  # stopping: no new units, but stream markers still pass
            self._items.append(item)
            self._cond.notify_all()
            return True

    @property
    def dropped_frames(self) -> int:
        """Frames dropped so far, all streams."""
        return sum(self.drops_by_stream().values())

    def drops_by_stream(self) -> dict:
        """A copy of the frames dropped per stream (the reader thread adds to them)."""
        with self._cond:
            return dict(self.dropped_by_stream)

    def note_capture_drops(self, stream: str, total: int) -> None:
        """The source's own count of frames it skipped for ``stream`` so far (a camera or a
        paced source that fell behind real time): counted with the queue's drops."""
        with self._cond:
            new = int(total) - self._capture_drops.get(stream, 0)
            if new > 0:
                self._capture_drops[stream] = int(total)
                self.dropped_by_stream[stream] = self.dropped_by_stream.get(stream, 0) + new

    def get_nowait(self):
        with self._cond:
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def __len__(self) -> int:
        with self._cond:
            return self._units()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

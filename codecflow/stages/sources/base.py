"""Source interface. A source yields one or more streams; each stream has a fixed geometry and
yields time instants, each a list of Frames (one view, or [left, right] for stereo).

Sources never import torch. Each source class has a nested dataclass ``Config`` (validated by
codecflow.pipeline.schema) and is built as ``SourceClass(config, mode)`` where mode is
"offline" or "live".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from codecflow.data import StreamInfo


@dataclass
class SourceStream:
    name: str  # stream name (file stem for file/folder sources), used for output file names
    info: StreamInfo  # width, height, pix_fmt, views, fps, matrix, range (unit_kind/gop unset)
    frames: Iterator  # yields list[Frame] per time instant (len == info.views)
    total: int | None = None  # number of instants if known (progress bar), else None
    meta: dict = field(default_factory=dict)  # e.g. {"path": "..."}


class Source:
    """Base class. ``live`` sources (cameras) never block on a slow pipeline."""

    live = False

    def __init__(self, config, mode: str = "offline"):
        self.config = config
        self.mode = mode

    def streams(self) -> Iterator[SourceStream]:
        raise NotImplementedError

    def close(self) -> None:
        pass

"""Framing: group a stream's time instants into units (frame, stereo pair, closed GOP)."""

from __future__ import annotations

import dataclasses
from typing import Iterator

from codecflow.data import StreamInfo


def stream_info_for(info: StreamInfo, unit_kind: str, gop: int) -> StreamInfo:
    return dataclasses.replace(info, unit_kind=unit_kind, gop=gop if unit_kind == "gop" else 1)


def frame_groups(instants: Iterator, unit_kind: str, gop: int) -> Iterator[tuple[list, int, int]]:
    """Yield (frames, first_frame, unit_index).

    frame: one frame per unit; pair: the two views of one instant; gop: up to `gop` consecutive
    frames (the last GOP of a stream may be shorter).
    """
    index = 0
    if unit_kind == "gop":
        group, first = [], 0
        for n, pictures in enumerate(instants):
            if not group:
                first = n
            group.append(pictures[0])
            if len(group) == gop:
                yield group, first, index
                index += 1
                group = []
        if group:
            yield group, first, index
        return
    for n, pictures in enumerate(instants):
        frames = list(pictures) if unit_kind == "pair" else [pictures[0]]
        yield frames, n, index
        index += 1

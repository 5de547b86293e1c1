"""learned-stereo-si: each view coded alone, decoded with the other view as side information.

The use: two cameras that cannot talk to each other (each encoder sees only its own view) and
one decoder that has both streams (the idea of DSIN). Every view's payload is a learned-intra
payload (docs/bitstream.md), made from that view alone: the rate is that of coding each view
alone, and a view's bytes are the same whatever the other view holds. The decoder refines each
decoded view with the other decoded view (`side_info.py`: disparity matching, a gate that falls
back to the plain picture for an unrelated view, a small integer-exact fusion network).

* Pair units: one record per view (as every stereo codec writes them); each record's
  reconstruction CRC is of the refined picture (the encoder, holding both views, runs the same
  decoder). A view whose partner is missing decodes plainly; its CRC is then not comparable
  (the latents are still verified by the payload's symbols CRC) and the status says so.
* Frame units (one camera, mono): the record is the same learned-intra payload and its CRC is
  of the plain picture; `codecflow decode VIEW.cfl --side-info OTHER.cfl` refines it with the
  other camera's stream (`SideInfoDecoder`).
"""

from __future__ import annotations

import numpy as np

from codecflow.codecs import colour
from codecflow.codecs.base import Codec
from codecflow.codecs.learned.intra import (
    accepts_intra_weights, check_refine_steps, decode_rgb, encode_rgb, intra_weights_id,
    resolve_device, unpack_payload)
from codecflow.codecs.registry import CodecSpec, register
from codecflow.data import FLAG_INTRA, FLAG_VIEW_RIGHT, CodedUnit, Record, StreamInfo, Unit
from codecflow.errors import CodecError

VIEWS = ("left", "right")
REFINED = "refined"


class SideInfoDecoder:
    """The refiner of learned-stereo-si, checked against the intra weights it was trained on:
    ``refine(view_rgb, other_rgb or None, q, which) -> (rgb, status)``."""

    def __init__(self, intra_sha: str, device: str = "cpu", weights: str | None = None):
        from codecflow.codecs.learned import weights as W
        from codecflow.codecs.learned.side_info import ExactRefiner

        path = weights or W.default_path("learned-stereo-si")
        model, self.sha = W.load_on_intra(path, intra_sha, "learned-stereo-si", device)
        self.exact = ExactRefiner(model)

    def refine(self, view: np.ndarray, other: np.ndarray | None, q: int, which: str) -> tuple:
        from codecflow.codecs.learned.side_info import refine

        return refine(self.exact, view, other, q, which)


@register(CodecSpec("learned-stereo-si", unit_kinds=("pair", "frame"), views=(2, 1),
                    needs_torch=True, uses_device=True, threads="torch"))
class LearnedStereoSI(Codec):
    """Each view coded alone (learned-intra payloads), refined at the decoder with the other."""

    version = "1"
    verifies_symbols = True

    def __init__(self, q: int = 32, device: str = "cpu", weights: str | None = None,
                 intra_weights: str | None = None, refine_steps: int = 0, **params):
        super().__init__(q=q, device=device, **params)
        if params:
            raise CodecError(f"learned-stereo-si: unknown parameter(s) {sorted(params)}; "
                             f"known: weights, intra_weights, refine_steps, device")
        self.refine_steps = check_refine_steps(refine_steps, "learned-stereo-si")
        from codecflow.codecs.learned import weights as W

        self.device = resolve_device(device)
        self.intra, intra_sha = W.load_intra_model(
            intra_weights or W.default_path("learned-intra"), self.device)
        self.intra_id = intra_weights_id(self.intra, intra_sha)  # learned-intra streams'
        self._intra_sha = intra_sha
        self.side = SideInfoDecoder(intra_sha, self.device, weights)
        # (frame index, view) -> status of the last unit decoded ("refined", "no side
        # information", ...): what `decoding.decode_unit` and the decode summary report
        self.side_info_status: dict = {}
        self.plain_rgb: dict = {}

    @property
    def weights_id(self) -> str:
        return self.side.sha[:12]

    def accepts_intra_weights(self, stream_id: str) -> bool:
        """Whether a learned-intra stream naming ``stream_id`` decodes with the intra weights
        here (`intra.accepts_intra_weights`)."""
        return accepts_intra_weights(self.intra, self._intra_sha, stream_id)

    def encode(self, unit: Unit) -> CodedUnit:
        if unit.kind not in self.unit_kinds:
            raise CodecError(f"learned-stereo-si codes pairs or single frames, got a "
                             f"{unit.kind} unit")
        info = unit.info
        coded = [encode_rgb(self.intra, colour.to_rgb(f, info.matrix, info.range), self.q,
                            self.refine_steps) for f in unit.frames]
        pictures = [pic for _, pic in coded]
        status = {}
        if unit.kind == "pair":
            pictures, status = self._refine_pair(pictures, [self.q, self.q])
        recon = [colour.like(p, info.pix_fmt, info.matrix, info.range) for p in pictures]
        records = []
        for v, (payload, _) in enumerate(coded):
            view = v if unit.kind == "pair" else 0
            records.append(Record(unit.first_frame, FLAG_INTRA | (FLAG_VIEW_RIGHT if view else 0),
                                  payload, recon[v].crc32(), view))
        meta = dict(unit.meta)
        if status:
            meta["side_info"] = [status[v] for v in (0, 1)]
        return CodedUnit(unit.kind, unit.seq, unit.stream, records, recon, info,
                         unit.first_frame, unit.index, meta)

    def _refine_pair(self, pictures: list, qs: list) -> tuple:
        out, status = [], {}
        for v in (0, 1):
            rgb, status[v] = self.side.refine(pictures[v], pictures[1 - v], qs[v], VIEWS[v])
            out.append(rgb)
        return out, status

    def decode(self, records: list, info: StreamInfo, max_layer: int | None = None) -> dict:
        self.side_info_status = {}
        plain, qs = {}, {}
        self.plain_rgb = plain  # the unrefined pictures (`codecflow decode --side-info`)
        for r in records:
            if not r.payload:
                raise CodecError(f"learned-stereo-si: frame {r.frame_index} view {r.view} has "
                                 f"an empty payload")
            where = f"frame {r.frame_index} view {r.view}: "
            qs[(r.frame_index, r.view)] = unpack_payload(r.payload)[0]
            plain[(r.frame_index, r.view)] = decode_rgb(self.intra, r.payload, where,
                                                        (info.height, info.width))
        out = {}
        for (fi, view), rgb in plain.items():
            if info.unit_kind == "pair":
                rgb, status = self.side.refine(rgb, plain.get((fi, 1 - view)),
                                               qs[(fi, view)], VIEWS[view])
                self.side_info_status[(fi, view)] = status
            out[(fi, view)] = colour.like(rgb, info.pix_fmt, info.matrix, info.range)
        return out

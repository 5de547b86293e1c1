"""The learned codecs on CUDA: what a GPU encodes, the CPU decodes to the same pictures, and
the reverse (the shipped weights; strict decoding, so the records' reconstruction CRCs must
match). Skips where no CUDA device is present; scripts/cross_device_check.py does the same
between two machines."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device: these tests compare CUDA and CPU coding",
                allow_module_level=True)

from codecflow.codecs import colour  # noqa: E402
from codecflow.codecs.decoding import decode_checked  # noqa: E402
from codecflow.codecs.learned.intra import LearnedIntra  # noqa: E402
from codecflow.codecs.learned.stereo import LearnedStereo  # noqa: E402
from codecflow.codecs.learned.video import LearnedVideo  # noqa: E402
from codecflow.data import StreamInfo, Unit  # noqa: E402
from tests.conftest import synth_rgb  # noqa: E402

CLASSES = {"frame": LearnedIntra, "pair": LearnedStereo, "gop": LearnedVideo}


def _unit(kind: str, w: int, h: int) -> tuple:
    n = {"frame": 1, "pair": 2, "gop": 3}[kind]
    info = StreamInfo(width=w, height=h, pix_fmt="yuv420p", views=2 if kind == "pair" else 1,
                      unit_kind=kind, gop=n if kind == "gop" else 1)
    frames = [colour.rgb_to_i420(synth_rgb(w, h, seed=4, shift=4 * i), info.matrix, info.range)
              for i in range(n)]
    return Unit(kind, 0, "s", frames, info), info


@pytest.mark.parametrize("kind", ["frame", "pair", "gop"])
@pytest.mark.parametrize("encode_on,decode_on", [("cuda", "cpu"), ("cpu", "cuda")])
def test_decodes_on_the_other_device(kind, encode_on, decode_on):
    unit, info = _unit(kind, 97, 61)
    for q in (0, 40, 63):
        coded = CLASSES[kind](q=q, device=encode_on).encode(unit)
        got = decode_checked(CLASSES[kind](q=q, device=decode_on), coded.records, info, kind,
                             strict=True)
        assert len(got) == len(coded.recon)
        for a, b in zip(got, coded.recon):
            assert all(np.array_equal(p, r) for p, r in zip(a.planes, b.planes))

"""`codecflow decode` (stages/decode.py): a stream that cannot be decoded leaves no empty
output behind."""

from __future__ import annotations

import pytest

from codecflow.codecs.container import CflWriter, stream_header
from codecflow.codecs.registry import create_codec
from codecflow.data import FLAG_INTRA, Record, StreamInfo
from codecflow.errors import CodecflowError
from codecflow.stages.decode import decode_file


def test_undecodable_first_unit_leaves_no_output(tmp_path):
    info = StreamInfo(32, 16, pix_fmt="yuv420p", unit_kind="frame")
    cfl = tmp_path / "bad.cfl"
    w = CflWriter(cfl, stream_header(info, create_codec("jpeg", q=30).header(), "bad"))
    w.write_unit(0, [Record(0, FLAG_INTRA, b"not a jpeg", 0)])
    w.close()
    out = tmp_path / "out"
    with pytest.raises(CodecflowError):
        decode_file(str(cfl), str(out / "bad.yuv"))
    assert not list(out.glob("*")), list(out.glob("*"))


def test_nothing_decodable_exits_non_zero_and_rate_counts_claimed_frames(tmp_path):
    from tests.conftest import run_cli

    info = StreamInfo(32, 16, pix_fmt="rgb24", unit_kind="frame")
    codec = create_codec("jpeg", q=30)
    empty = tmp_path / "empty.cfl"
    CflWriter(empty, stream_header(info, codec.header(), "empty")).close(frames=0)
    p = run_cli("decode", empty)
    assert p.returncode != 0 and "nothing decodable" in p.stderr
    # a file whose end record claims 3 frames but holds 1: bpp over the 3
    import numpy as np

    from codecflow.data import Frame, Unit

    part = tmp_path / "part.cfl"
    w = CflWriter(part, stream_header(info, codec.header(), "part"))
    frame = Frame.rgb(np.zeros((16, 32, 3), np.uint8))
    w.write_unit(0, codec.encode(Unit("frame", 0, "part", [frame], info)).records)
    w.close(frames=3)
    r = decode_file(str(part), None)
    assert r["frames"] == 1 and r["frames_claimed"] == 3 and not r["complete"]
    assert r["bpp"] == pytest.approx(8 * part.stat().st_size / (32 * 16 * 3))

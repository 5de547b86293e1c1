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

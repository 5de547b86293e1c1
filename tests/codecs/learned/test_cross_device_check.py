"""scripts/cross_device_check.py: the make -> encode -> decode round on one device passes, and
a damaged payload is reported as a mismatch with exit status 1."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
msgpack = pytest.importorskip("msgpack")

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))

import cross_device_check as xdc  # noqa: E402


def test_round_on_one_device_and_a_damaged_payload(tmp_path, capsys):
    cases = tmp_path / "cases.msgpack"
    assert xdc.main(["make", "--data", str(tmp_path / "no_data"), "--out", str(cases)]) == 0
    kinds = sorted(c["kind"] for c in msgpack.unpackb(cases.read_bytes()))
    assert kinds == ["frame", "gop", "pair"]  # synthetic stand-ins without a data folder
    coded = tmp_path / "coded.msgpack"
    assert xdc.main(["encode", "--cases", str(cases), "--q", "20", "--out", str(coded)]) == 0
    report = tmp_path / "r.json"
    assert xdc.main(["decode", "--coded", str(coded), "--json", str(report)]) == 0
    assert "3 of 3 units decode to the encoder's pictures" in capsys.readouterr().out

    data = msgpack.unpackb(coded.read_bytes())
    rec = data["units"][0]["records"][0]
    payload = bytearray(rec[2])
    payload[len(payload) // 2] ^= 0x55
    rec[2] = bytes(payload)
    coded.write_bytes(msgpack.packb(data))
    assert xdc.main(["decode", "--coded", str(coded)]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "2 of 3 units" in out

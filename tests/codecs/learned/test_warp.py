"""Block displacement fields: the encoder's searches find known shifts, warping is a gather,
the signalled field round-trips and is checked."""

from __future__ import annotations

import numpy as np
import pytest

from codecflow.codecs.learned.warp import (
    block_disparity, block_motion, pack_field, pack_field_zlib, unpack_field, warp)
from codecflow.errors import CodecError
from tests.conftest import synth_rgb


def test_disparity_search_finds_a_known_shift():
    wide = synth_rgb(160 + 20, 64, seed=2)
    left, right = wide[:, 20:], wide[:, :-20]  # left(x) = right(x + 20)
    field = block_disparity(left, right, 16, -32, 32)
    assert field.shape == (4, 10, 2) and (field[..., 1] == 0).all()
    assert np.mean(field[:, :8, 0] == 20) > 0.9  # the last blocks see the replicated edge
    field = block_disparity(right, left, 16, -32, 32)  # right(x) = left(x - 20)
    assert np.mean(field[:, 2:, 0] == -20) > 0.9


def test_rate_constrained_disparity_costs_fewer_bytes_for_a_close_match():
    """On a noisy pair, weighing field bits makes a cheaper field that matches almost as well
    (and keeps the true shift where the picture has detail)."""
    rng = np.random.default_rng(3)
    wide = synth_rgb(256 + 12, 128, seed=4).astype(np.int16)
    left = np.clip(wide[:, 12:] + rng.normal(0, 12, (128, 256, 3)), 0, 255).astype(np.uint8)
    right = np.clip(wide[:, :-12] + rng.normal(0, 12, (128, 256, 3)), 0, 255).astype(np.uint8)
    free = block_disparity(left, right, 8, -32, 32, rate=0.0)
    paid = block_disparity(left, right, 8, -32, 32, rate=2.0)
    assert len(pack_field(paid, 8)) < 0.8 * len(pack_field(free, 8))

    def err(field):
        return np.abs(warp(right, field, 8).astype(float) - left)[:, :-16].mean()
    assert err(paid) < 1.05 * err(free)
    assert np.mean(paid[:, :-2, 0] == 12) > 0.9


def test_motion_search_finds_a_known_motion():
    big = synth_rgb(200, 140, seed=5)
    prev, cur = big[20:116, 20:180], big[23:119, 14:174]  # content moved by (-6, +3)
    field = block_motion(cur, prev, 16, 24)
    assert field.shape == (6, 10, 2)
    assert np.mean((field == (-6, 3)).all(-1)) > 0.85  # flat blocks match elsewhere too
    pred = warp(prev, field, 16).astype(float)
    assert np.abs(pred - cur)[16:-16, 16:-16].mean() < 2.0


def test_warp_is_a_gather_with_replicated_edges():
    ref = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8, 1)
    field = np.zeros((2, 2, 2), np.int32)
    field[0, 1] = (2, 0)
    field[1, 0] = (0, -1)
    out = warp(ref, field, 4)
    assert np.array_equal(out[:4, 4:6], ref[:4, 6:8]) and (out[:4, 6:] == ref[:4, 7:8]).all()
    assert np.array_equal(out[4:, :4], ref[3:5, :4])


def test_field_round_trip_and_checks():
    rng = np.random.default_rng(0)
    field = rng.integers(-300, 300, (3, 5, 2)).astype(np.int32)
    data = pack_field(field, 16)
    assert data[4] == 4 | 0x80  # block 16, range-coded
    got, block = unpack_field(data, 40, 70, "x")
    assert block == 16 and np.array_equal(got, field)
    with pytest.raises(CodecError, match="does not fit"):
        unpack_field(data, 40, 90, "x")
    with pytest.raises(CodecError, match="truncated"):
        unpack_field(data[:8], 40, 70, "x")
    with pytest.raises(CodecError, match="truncated"):
        unpack_field(data[:3], 40, 70, "x")
    with pytest.raises(CodecError, match="out of range"):
        unpack_field(pack_field(np.full((3, 5, 2), 5000), 16), 40, 70, "x")


def test_first_field_format_still_decodes():
    rng = np.random.default_rng(1)
    field = rng.integers(-300, 300, (3, 5, 2)).astype(np.int32)
    data = pack_field_zlib(field, 16)
    assert data[4] == 4
    got, block = unpack_field(data, 40, 70, "x")
    assert block == 16 and np.array_equal(got, field)
    with pytest.raises(CodecError, match="corrupt"):
        unpack_field(data[:5] + b"zz", 40, 70, "x")


@pytest.mark.parametrize("seed", range(4))
def test_range_coded_fields_round_trip_and_beat_zlib_on_smooth_fields(seed):
    rng = np.random.default_rng(seed)
    bh, bw = 30, 46
    field = np.zeros((bh, bw, 2), np.int32)
    steps = rng.integers(-2, 3, size=(bh, bw)) * (rng.random((bh, bw)) < 0.15)
    field[..., 0] = 24 + np.cumsum(steps, axis=1)
    field[rng.random((bh, bw)) < 0.02, 0] = rng.integers(-16, 256)  # outliers
    data = pack_field(field, 8)  # a stereo field: dy = 0
    got, block = unpack_field(data, bh * 8, bw * 8 - 5, "x")
    assert block == 8 and np.array_equal(got, field)
    assert len(data) < len(pack_field_zlib(field, 8))
    field[rng.random((bh, bw)) < 0.01, 1] = 4096 * rng.choice([-1, 1])  # extreme values
    got, _ = unpack_field(pack_field(field, 8), bh * 8, bw * 8 - 5, "x")
    assert np.array_equal(got, field)


def test_garbage_fields_are_errors_not_crashes():
    rng = np.random.default_rng(7)
    head = pack_field(np.zeros((6, 9, 2), np.int32), 16)[:5]
    for _ in range(20):
        junk = head + rng.integers(0, 256, int(rng.integers(5, 40)), dtype=np.uint8).tobytes()
        try:
            field, _ = unpack_field(junk, 96, 144, "x")
        except CodecError:
            continue
        assert field.shape == (6, 9, 2) and np.abs(field).max() <= 4096

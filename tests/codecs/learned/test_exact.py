"""Exact decoding: learned streams decode to the encoder's pictures on any thread count, size,
unit kind and CPU code path (integer parameter path and synthesis, codecs/learned/exact.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codecflow.data import Frame, StreamInfo, Unit  # noqa: E402

from codecflow.codecs.registry import create_codec  # noqa: E402
from codecflow.codecs.decoding import decode_checked  # noqa: E402
from codecflow.codecs.learned import exact  # noqa: E402
from codecflow.codecs.learned.weights import default_path  # noqa: E402

SIZES = [(1, 1), (64, 48), (97, 61), (256, 160), (333, 211), (512, 288)]  # W x H
THREADS = (1, 2, 4)


def _picture(w, h, seed=0):
    from codecflow.training.datasets import synthetic_images

    img = synthetic_images(1, max(w, h, 16), seed=seed)[0]
    return np.ascontiguousarray(img[:h, :w])


class threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


@pytest.fixture(scope="module")
def codec():
    if not default_path().is_file():
        pytest.skip(f"no shipped weights at {default_path()}")
    return create_codec("learned-intra", q=40)


# ---------------------------------------------------------------------------- integer layers
def test_integer_conv_is_order_independent_and_close_to_float():
    torch.manual_seed(0)
    for layer in (torch.nn.Conv2d(24, 16, 5, 2, 2), torch.nn.ConvTranspose2d(24, 16, 5, 2, 2, 1)):
        ex = exact.ExactConv(layer, exact.ACT_FRAC, exact.ACT_FRAC, exact.ACT_LIMIT)
        x = torch.randn(1, 24, 13, 11) * 3
        a = exact.to_fixed(x, exact.ACT_FRAC)
        out = ex(a)
        # permuting the input channels changes the summation order, never the result
        perm = torch.randperm(24)
        ex2 = exact.ExactConv(layer, exact.ACT_FRAC, exact.ACT_FRAC, exact.ACT_LIMIT)
        ex2.w = ex2.w[:, perm] if not ex.transposed else ex2.w[perm]
        assert torch.equal(ex2(a[:, perm]), out)
        ref = layer(x).detach().double()
        assert (out / 2 ** exact.ACT_FRAC - ref).abs().max() < 2e-3


def test_inputs_are_clamped_where_sums_could_pass_2_53():
    layer = torch.nn.Conv2d(4, 2, 3)
    ex = exact.ExactConv(layer, exact.ACT_FRAC, exact.ACT_FRAC, in_limit=2.0 ** 45)
    l1 = float(ex.w.abs().sum(dim=[1, 2, 3]).max())
    assert ex.clamp_in is not None and ex.clamp_in * l1 + ex.b.abs().max() < exact.EXACT
    huge = torch.full((1, 4, 5, 5), 2.0 ** 44, dtype=torch.float64)
    assert torch.equal(ex(huge), ex(huge.clamp(max=ex.clamp_in)))
    # the usual limit needs no clamp for such a layer
    assert exact.ExactConv(layer, 12, 12, exact.ACT_LIMIT).clamp_in is None
    with pytest.raises(exact.ExactnessError, match="2\\^53"):
        exact.ExactConv(layer, 40, 12, exact.ACT_LIMIT)  # 2^40 units per 1.0: no room


def test_gdn_channel_with_a_tiny_gamma_row_stays_exact():
    """Training can drive one channel's gamma row to ~1e-11 (seen in an inverse GDN): its
    per-channel shift then lowers until beta's integer fits below 2^53, instead of the layer
    being refused; the other channels keep their integers, and the result stays close to
    float."""
    from compressai.layers import GDN

    torch.manual_seed(0)
    gdn = GDN(6, inverse=True)
    with torch.no_grad():
        gamma = gdn.gamma_reparam(gdn.gamma).clone() + 0.05 * torch.rand(6, 6)
        gdn.gamma.copy_(gdn.gamma_reparam.init(gamma))
        before = exact.ExactGDN(gdn, exact.ACT_FRAC)
        gamma[2] = 3e-11
        gdn.gamma.copy_(gdn.gamma_reparam.init(gamma))
        ex = exact.ExactGDN(gdn, exact.ACT_FRAC)
    worst = ex.gamma.abs().sum(dim=[1, 2, 3]) * exact.SQ_LIMIT + ex.beta.abs().flatten()
    assert float(worst.max()) < exact.EXACT
    keep = [c for c in range(6) if c != 2]
    assert torch.equal(ex.gamma[keep], before.gamma[keep])
    assert torch.equal(ex.beta[:, keep], before.beta[:, keep])
    x = torch.randn(1, 6, 5, 7) * 2
    ref = gdn(x.float()).detach().double()
    out = ex(exact.to_fixed(x, exact.ACT_FRAC)) / 2 ** exact.ACT_FRAC
    assert (out - ref).abs().max() < 1e-2


def test_inexact_module_is_refused():
    with pytest.raises(exact.ExactnessError, match="Sigmoid"):
        exact.ExactSequential(torch.nn.Sequential(torch.nn.Sigmoid()), 0, 1.0)


def test_banded_synthesis_is_the_same_picture(codec, monkeypatch):
    """The synthesis runs in bands of rows (bounded memory for large pictures): with the
    halo the net reaches, bands change no pixel; with one row less they would."""
    ex = codec.model.exact()
    torch.manual_seed(0)
    y16 = torch.round(torch.randn(1, codec.model.M, 13, 9, dtype=torch.float64) * 40) * 16
    whole = ex.synthesize(y16.clone(), 30)
    monkeypatch.setattr(exact, "BAND_PIXELS", 2 * 9 * 16 * 16)  # bands of 2 latent rows
    assert torch.equal(ex.synthesize(y16.clone(), 30), whole)
    halo = ex.g_s.row_halo()
    a = torch.round(torch.randn(1, codec.model.M, 13, 9, dtype=torch.float64) * 2 ** 14)
    full = ex.g_s(a.clone())
    assert torch.equal(exact.in_bands(ex.g_s, a.clone(), 16, halo), full)
    assert not torch.equal(exact.in_bands(ex.g_s, a.clone(), 16, halo - 1), full)


# ------------------------------------------------------------------ the cross-thread matrix
def _encode(codec, w, h, kind, n_threads, seed=1):
    info = StreamInfo(width=w, height=h, pix_fmt="rgb24", views=2 if kind == "pair" else 1,
                      unit_kind=kind)
    n = 2 if kind == "pair" else 1
    frames = [Frame.rgb(_picture(w, h, seed + i)) for i in range(n)]
    with threads(n_threads):
        coded = codec.encode(Unit(kind, 0, "s", frames, info))
    return coded, info


@pytest.mark.parametrize("w,h", SIZES)
@pytest.mark.parametrize("kind", ["frame", "pair"])
def test_decoder_threads_reproduce_the_encoder(codec, w, h, kind):
    coded, info = _encode(codec, w, h, kind, 1)
    for t in THREADS:
        with threads(t):
            out = decode_checked(codec, coded.records, info, kind, strict=True)
        assert all(np.array_equal(a.planes[0], b.planes[0]) for a, b in zip(out, coded.recon))


@pytest.mark.parametrize("w,h", SIZES)
def test_encoder_threads_decode_to_their_crc(codec, w, h):
    for t in THREADS[1:]:
        coded, info = _encode(codec, w, h, "frame", t, seed=7)
        with threads(1):
            decode_checked(codec, coded.records, info, "frame", strict=True)


@pytest.fixture(scope="module")
def oversampled(codec):
    """learned-intra at a q coded in the oversampled mode (2x latents, integer halving)."""
    return create_codec("learned-intra", q=62)


@pytest.mark.parametrize("w,h", [(1, 1), (97, 61), (333, 211)])
def test_oversampled_pictures_decode_the_same_with_any_thread_count(oversampled, w, h):
    from codecflow.codecs.learned.intra import FLAG_OVERSAMPLED

    coded, info = _encode(oversampled, w, h, "frame", 2, seed=3)
    assert coded.records[0].payload[3] & FLAG_OVERSAMPLED
    for t in THREADS:
        with threads(t):
            out = decode_checked(oversampled, coded.records, info, "frame", strict=True)
        assert np.array_equal(out[0].planes[0], coded.recon[0].planes[0])


# ---------------------------------------------- another CPU code path, in another process
DECODE_SCRIPT = r"""
import json, sys, torch
from codecflow.data import StreamInfo
from codecflow.codecs.registry import create_codec
from codecflow.codecs.learned.intra import decode_rgb
import zlib
jobs = json.load(open(sys.argv[1]))
torch.set_num_threads(3)
codec = create_codec("learned-intra", q=40)
out = []
for job in jobs:
    rgb = decode_rgb(codec.model, bytes.fromhex(job["payload"]))
    out.append(zlib.crc32(rgb.tobytes()) & 0xFFFFFFFF)
print(json.dumps({"crcs": out, "threads": torch.get_num_threads(),
                  "isa": torch.backends.cpu.get_cpu_capability()}))
"""


def test_decode_in_a_process_with_other_cpu_kernels(codec, oversampled, tmp_path):
    """Scalar kernels (ATEN_CPU_CAPABILITY=default), MKL restricted to SSE4.2 and 3 threads:
    a stand-in for another machine. Pictures must be bit-identical (the last one oversampled)."""
    jobs = []
    for c, (w, h) in [(codec, (97, 61)), (codec, (256, 160)), (codec, (333, 211)),
                      (oversampled, (150, 90))]:
        coded, _ = _encode(c, w, h, "frame", 2, seed=11)
        jobs.append({"payload": coded.records[0].payload.hex(),
                     "crc": coded.records[0].recon_crc})
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(jobs))
    script = tmp_path / "decode.py"
    script.write_text(DECODE_SCRIPT)
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", MKL_ENABLE_INSTRUCTIONS="SSE4_2",
               PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, str(script), str(path)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["isa"] == "DEFAULT" and res["threads"] == 3
    assert res["crcs"] == [j["crc"] for j in jobs]

"""The conditional latent coder: exact round trips, a zero condition, and what a condition buys
(a toy task trained here, so the claim is measured on a trained net, not an untrained one)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from codecflow.codecs.learned.conditional import ConditionalLatentCoder  # noqa: E402
from codecflow.codecs.learned.exact import ACT_FRAC  # noqa: E402

M, C, H, W = 8, 8, 8, 12
C_FRAC = 4  # the condition: a latent on the 1/16 grid, as a decoded latent is


def _latents(n, seed):
    """Smooth random latents (what a transform's output looks like, roughly)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, M, H // 2, W // 2, generator=g) * 4
    return torch.nn.functional.interpolate(y, size=(H, W), mode="bilinear",
                                           align_corners=False)


def _as_condition(y):
    return torch.round(y * 2 ** C_FRAC)


@pytest.fixture(scope="module")
def trained():
    """Trained for a few seconds on 'the condition is the latent itself' (c = y)."""
    torch.manual_seed(0)
    coder = ConditionalLatentCoder(M, C, N=16, F_=16)
    opt = torch.optim.Adam([p for n, p in coder.named_parameters() if "quantiles" not in n],
                           lr=2e-3)
    aux = torch.optim.Adam([p for n, p in coder.named_parameters() if "quantiles" in n],
                           lr=1e-2)
    for step in range(300):
        y = _latents(8, step)
        c = _as_condition(y) / 2 ** C_FRAC
        out = coder(y, c)
        bits = sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / y.shape[0]
        loss = bits / (H * W) + 50 * torch.mean((out["y_hat"] - y) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        aux.zero_grad()
        coder.entropy_bottleneck.loss().backward()
        aux.step()
    coder.eval()
    coder.build_tables()
    return coder


def _code(coder, y, c_int):
    out = coder.compress(y, c_int, C_FRAC)
    nbytes = sum(len(s) for s in out["strings"])
    y_hat, crc = coder.decompress(out["strings"], out["z_shape"], c_int, C_FRAC)
    assert torch.equal(y_hat, out["y_hat"]) and crc == out["symbols_crc"]  # bit-exact
    return nbytes, y_hat / 2 ** ACT_FRAC


def test_round_trip_untrained_and_zero_condition():
    torch.manual_seed(1)
    coder = ConditionalLatentCoder(M, C, N=16, F_=16).eval()
    coder.build_tables()
    y = _latents(1, 99)
    for c_int in (_as_condition(y), torch.zeros(1, C, H, W, dtype=torch.float64)):
        nbytes, y_hat = _code(coder, y, c_int)
        assert nbytes > 0
        assert (y_hat - y).abs().max() <= 0.5 + 1 / 16  # rounding to the coded grid


def test_round_trip_independent_of_threads(trained):
    y = _latents(1, 123)
    c_int = _as_condition(y)
    old = torch.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            out = trained.compress(y, c_int, C_FRAC)
            outs.append((b"".join(out["strings"]), out["y_hat"]))
            torch.set_num_threads(4 - t)
            got, _ = trained.decompress(out["strings"], out["z_shape"], c_int, C_FRAC)
            assert torch.equal(got, out["y_hat"])
    finally:
        torch.set_num_threads(old)


def test_a_condition_equal_to_y_costs_far_fewer_bits(trained):
    with_c, without = 0, 0
    for seed in range(1000, 1004):
        y = _latents(1, seed)
        b1, y1 = _code(trained, y, _as_condition(y))
        b0, y0 = _code(trained, y, torch.zeros(1, C, H, W, dtype=torch.float64))
        with_c, without = with_c + b1, without + b0
        assert torch.mean((y1 - y) ** 2) < 0.1
    assert with_c < 0.5 * without, (with_c, without)


def test_the_mask_uses_the_condition(trained):
    """Trained on c = y, the coder leans on residual coding: the mask is mostly high."""
    y = _latents(4, 77)
    c = _as_condition(y) / 2 ** C_FRAC
    with torch.no_grad():
        m = trained(y, c)["mask"]
    assert 0.0 <= float(m.min()) and float(m.max()) <= 1.0
    assert float(m.mean()) > 0.5


def test_shipped_like_weights_one_manifest_two_models(tmp_path):
    """A conditional coder saved next to an intra model: one manifest lists both; each loads
    by its file (sha256 checked), with its coding tables, and codes bit-exactly."""
    import json

    from codecflow.codecs.learned.model import build_model
    from codecflow.codecs.learned.weights import load_model, save_weights

    torch.manual_seed(3)
    save_weights(build_model({"N": 16, "M": 24}).eval(), tmp_path / "intra.pt",
                 {"data": ["test"]}, codec="learned-intra")
    save_weights(ConditionalLatentCoder(M, C, N=16, F_=16).eval(), tmp_path / "cond.pt",
                 {"data": ["test"]}, codec="learned-stereo")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {manifest[k]["file"] for k in manifest} == {"intra.pt", "cond.pt"}
    intra, _ = load_model(tmp_path / "intra.pt", codec="learned-intra")
    coder, sha = load_model(tmp_path / "cond.pt", codec="learned-stereo")
    assert type(coder).__name__ == "ConditionalLatentCoder" and sha == manifest[
        "learned-stereo"]["sha256"]
    assert type(intra).__name__ == "IntraModel"
    y = _latents(1, 5)
    nbytes, _ = _code(coder, y, _as_condition(y))
    again, _ = load_model(tmp_path / "cond.pt", codec="learned-stereo")
    assert torch.equal(again.exact(C_FRAC).ep.ops[0].w, coder.exact(C_FRAC).ep.ops[0].w)
    assert nbytes > 0


def test_init_from_intra_starts_as_the_intra_entropy_model():
    """With the mask closed (m = 0) a coder initialised from an intra model codes a latent
    into exactly the intra model's bytes, whatever the condition."""
    from codecflow.codecs.learned.conditional import build_coder
    from codecflow.codecs.learned.model import build_model

    torch.manual_seed(3)
    intra = build_model({"N": 16, "M": 24}).eval()
    intra.build_tables()
    coder = build_coder({"M": 24, "C": 24, "N": 16, "H": intra.h_s[2].out_channels,
                         "E": intra.ep[2].out_channels, "F": 8})
    coder.init_from_intra(intra)
    with torch.no_grad():
        coder.mask[2].bias.fill_(-4.0)  # hard sigmoid -> 0
    coder.eval()
    coder.build_tables()
    g = torch.Generator().manual_seed(0)
    y = torch.randn(1, 24, 8, 12, generator=g) * 3
    c_int = torch.round(torch.randn(1, 24, 8, 12, generator=g) * 64)
    ours = coder.compress(y, c_int, 4)
    theirs = intra.compress_latent(y)
    assert [bytes(s) for s in ours["strings"]] == [bytes(s) for s in theirs["strings"]]

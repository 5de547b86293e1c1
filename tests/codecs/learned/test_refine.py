"""learned-stereo's view refiner: exact integer evaluation (any thread count, close to the
float form), the identity at initialisation, the REFINED flag in the codec both ways, and a
refiner that does not belong to the coder loaded."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codecflow.codecs.decoding import decode_checked  # noqa: E402
from codecflow.codecs.registry import create_codec  # noqa: E402
from codecflow.data import Frame, StreamInfo, Unit  # noqa: E402
from codecflow.errors import CodecError  # noqa: E402
from tests.conftest import synth_rgb  # noqa: E402


def _random_refiner(seed=0, scale=0.05):
    from codecflow.codecs.learned.refine import ViewRefiner

    torch.manual_seed(seed)
    r = ViewRefiner(hidden=16)
    with torch.no_grad():
        r.net[-1].weight.normal_(0, scale)
        r.net[-1].bias.normal_(0, 0.01)
    return r.eval()


def test_identity_at_initialisation():
    from codecflow.codecs.learned.refine import ViewRefiner

    pic, other = synth_rgb(37, 23, seed=1), synth_rgb(37, 23, seed=2)
    assert np.array_equal(ViewRefiner(hidden=8).eval().refine(pic, other, 30), pic)


def test_exact_refinement_is_thread_independent_and_close_to_float():
    r = _random_refiner()
    pic, other = synth_rgb(70, 42, seed=3), synth_rgb(70, 42, seed=4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = r.refine(pic, other, 40)
        r._exact = None
        torch.set_num_threads(2)
        b = r.refine(pic, other, 40)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(a, b) and a.shape == pic.shape and a.dtype == np.uint8
    assert not np.array_equal(a, pic)  # it does change the picture
    # the float (training) form agrees to within rounding
    from codecflow.codecs.learned.refine import pad_to

    def t(x):
        return pad_to(torch.from_numpy(x).permute(2, 0, 1)[None].float(), 4)

    with torch.no_grad():
        f = r(t(pic), t(other), torch.tensor([40.0]))[0, :, :42, :70]
    f = f.clamp(0, 255).permute(1, 2, 0).numpy()
    assert np.max(np.abs(f - a.astype(np.float32))) <= 1.01


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from codecflow.codecs.learned.conditional import build_coder
    from codecflow.codecs.learned.model import build_model
    from codecflow.codecs.learned.weights import save_weights

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("w")
    intra = save_weights(build_model({"N": 32, "M": 48}).eval(), folder / "learned_intra.pt",
                         {"data": ["random init (tests)"]})
    coder = build_coder({"M": 48, "C": 48, "N": 16, "F": 16,
                         "base": {"codec": "learned-intra", "sha256": intra["sha256"]}})
    stereo = save_weights(coder.eval(), folder / "learned_stereo.pt", {"data": ["random"]},
                          codec="learned-stereo")
    r = _random_refiner()
    r.base = {"codec": "learned-stereo", "sha256": stereo["sha256"]}
    save_weights(r, folder / "learned_stereo_refine.pt", {"data": ["random"]},
                 codec="learned-stereo-refine")
    return folder


def _codec(weights, refine_weights="learned_stereo_refine.pt", **kw):
    if refine_weights:
        kw["refine_weights"] = str(weights / refine_weights)
    return create_codec("learned-stereo", q=kw.pop("q", 30),
                        weights=str(weights / "learned_stereo.pt"),
                        intra_weights=str(weights / "learned_intra.pt"), **kw)


def test_refined_view_decodes_exactly_and_needs_the_refiner(weights):
    from codecflow.codecs.learned import stereo as S

    codec = _codec(weights)
    left = synth_rgb(80, 48, seed=5)
    right = np.roll(left, -4, axis=1)
    _, pic1, _ = S.encode_rgb_latent(codec.intra, left, 30)
    c = S.code_second(codec.intra, codec.coder, right, pic1, 30, 0)
    want = S.refined(codec.refiner, c["picture"], c["aligned"], 30, False)
    assert not np.array_equal(want, c["picture"])
    payload = S.pack_payload(30, S.FLAG_REFINED, 0, 48, 80, c["strings"], c["symbols_crc"])
    assert np.array_equal(S.decode_second(codec.intra, codec.coder, payload, pic1, "",
                                          codec.refiner), want)
    with pytest.raises(CodecError, match="no refiner weights"):
        S.decode_second(codec.intra, codec.coder, payload, pic1)


def test_codec_round_trip_with_and_without_refinement(weights):
    info = StreamInfo(width=64, height=40, pix_fmt="rgb24", views=2, unit_kind="pair")
    left = synth_rgb(64, 40, seed=7)
    unit = Unit("pair", 0, "s", [Frame.rgb(left), Frame.rgb(np.roll(left, -3, axis=1))], info)
    on, off = _codec(weights), _codec(weights, refine=False)
    # both load the refiner (a decoder needs it), so streams name the same weights
    assert on.weights_id == off.weights_id != on._sha[:12]
    for codec in (on, off):
        coded = codec.encode(unit)
        got = decode_checked(codec, coded.records, info, "pair")
        assert all(np.array_equal(a.planes[0], b.planes[0]) for a, b in zip(got, coded.recon))
    assert not off.encode(unit).records[1].payload[3] & 0x02
    with pytest.raises(CodecError, match="refine must be"):
        _codec(weights, refine="yes")
    with pytest.raises(CodecError, match="does not exist"):
        _codec(weights, refine_weights="missing.pt")


def test_refiner_of_other_stereo_weights_is_refused(weights, tmp_path):
    from codecflow.codecs.learned.weights import save_weights

    r = _random_refiner(seed=3)
    r.base = {"codec": "learned-stereo", "sha256": "0" * 64}
    save_weights(r, tmp_path / "learned_stereo_refine.pt", {"data": ["other"]},
                 codec="learned-stereo-refine")
    with pytest.raises(CodecError, match="trained on learned-stereo weights"):
        create_codec("learned-stereo", weights=str(weights / "learned_stereo.pt"),
                     intra_weights=str(weights / "learned_intra.pt"),
                     refine_weights=str(tmp_path / "learned_stereo_refine.pt"))

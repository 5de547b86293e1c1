"""learned-stereo-si: views coded alone (learned-intra payloads, independent of the other view),
refined at the decoder with the other view; exact round trips, the fallbacks (partner missing,
another size, unrelated), grey pairs, `codecflow decode --side-info`, and the shipped weights
on real pairs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codecflow.codecs import colour  # noqa: E402
from codecflow.codecs.decoding import decode_checked  # noqa: E402
from codecflow.codecs.registry import check_views, create_codec  # noqa: E402
from codecflow.data import Frame, StreamInfo, Unit  # noqa: E402
from codecflow.errors import CodecError  # noqa: E402
from tests.conftest import ROOT, synth_rgb  # noqa: E402

SHIPPED = ROOT / "weights" / "learned_stereo_si.pt"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random intra weights and a random (non-zero) refiner saved like shipped ones."""
    from codecflow.codecs.learned.model import build_model
    from codecflow.codecs.learned.side_info import build_refiner
    from codecflow.codecs.learned.weights import save_weights

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("w")
    intra = save_weights(build_model({"N": 32, "M": 48}).eval(), folder / "learned_intra.pt",
                         {"data": ["random init (tests)"]})
    refiner = build_refiner({"channels": 8, "layers": 3,
                             "base": {"codec": "learned-intra", "sha256": intra["sha256"]}})
    with torch.no_grad():
        refiner.net[-1].weight.normal_(0, 0.02)
    save_weights(refiner.eval(), folder / "learned_stereo_si.pt", {"data": ["random init"]},
                 codec="learned-stereo-si")
    return folder


def _codec(weights, q=30):
    return create_codec("learned-stereo-si", q=q, weights=str(weights / "learned_stereo_si.pt"),
                        intra_weights=str(weights / "learned_intra.pt"))


def _pair(views, pix_fmt="rgb24"):
    h, w = views[0].shape[:2]
    info = StreamInfo(width=w, height=h, pix_fmt=pix_fmt, views=2, unit_kind="pair")
    frames = [Frame.rgb(v) if pix_fmt == "rgb24" else colour.rgb_to_i420(v, info.matrix,
                                                                          info.range)
              for v in views]
    return Unit("pair", 0, "s", frames, info), info


def _views(w, h):
    """A pair with a 6 pixel disparity: left(x) = right(x - 6)."""
    base = synth_rgb(w + 6, h, seed=1)
    return [np.ascontiguousarray(base[:, :w]), np.ascontiguousarray(base[:, 6:])]


def test_registered_for_pairs_and_mono():
    assert check_views("learned-stereo-si", 2).default_unit_kind(2) == "pair"
    assert check_views("learned-stereo-si", 1).default_unit_kind(1) == "frame"


@pytest.mark.parametrize("w,h,pix_fmt", [(96, 64, "rgb24"), (97, 61, "rgb24"),
                                         (72, 40, "yuv420p")])
def test_pair_round_trip_is_exact_and_refined(weights, w, h, pix_fmt):
    codec = _codec(weights)
    unit, info = _pair(_views(w, h), pix_fmt)
    coded = codec.encode(unit)
    assert [r.view for r in coded.records] == [0, 1]
    assert all(r.payload[0] == 0x4C for r in coded.records)  # learned-intra payloads
    assert coded.meta["side_info"] == ["refined", "refined"]
    mismatches = []
    got = decode_checked(codec, coded.records, info, "pair", mismatches=mismatches)
    assert not mismatches
    assert all(np.array_equal(p, q) for a, b in zip(got, coded.recon)
               for p, q in zip(a.planes, b.planes))
    assert codec.side_info_status == {(0, 0): "refined", (0, 1): "refined"}
    # the refiner changed the pictures: the plain decodes differ from the refined ones
    assert not np.array_equal(codec.plain_rgb[(0, 0)], colour.to_rgb(got[0]))


def test_view_payload_does_not_depend_on_the_other_view(weights):
    codec = _codec(weights)
    left = synth_rgb(80, 48, seed=2)
    a = codec.encode(_pair([left, synth_rgb(80, 48, seed=2, shift=5)])[0])
    b = codec.encode(_pair([left, synth_rgb(80, 48, seed=9)])[0])
    assert a.records[0].payload == b.records[0].payload
    intra = create_codec("learned-intra", q=30, weights=str(weights / "learned_intra.pt"))
    alone = intra.encode(Unit("frame", 0, "s", [Frame.rgb(left)],
                              StreamInfo(80, 48, pix_fmt="rgb24")))
    assert alone.records[0].payload == a.records[0].payload


def test_missing_partner_decodes_plainly_without_a_mismatch(weights):
    codec = _codec(weights)
    unit, info = _pair(_views(64, 48))
    coded = codec.encode(unit)
    mismatches = []
    got = decode_checked(codec, coded.records[1:], info, "pair", mismatches=mismatches)
    assert len(got) == 1 and not mismatches
    assert codec.side_info_status == {(0, 1): "no side information"}
    intra = create_codec("learned-intra", q=30, weights=str(weights / "learned_intra.pt"))
    plain = intra.decode_picture(coded.records[1].payload, info)
    assert np.array_equal(got[0].planes[0], plain.planes[0])


def test_unrelated_or_other_size_side_view_falls_back_to_the_plain_picture(weights):
    from codecflow.codecs.learned.side_info import refine

    codec = _codec(weights)
    view = synth_rgb(96, 64, seed=3)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    out, status = refine(codec.side.exact, view, noise, 30, "left")
    assert status == "side information unrelated" and out is view
    out, status = refine(codec.side.exact, view, synth_rgb(90, 64), 30, "left")
    assert status == "side information of another size" and out is view
    out, status = refine(codec.side.exact, view, None, 30, "left")
    assert status == "no side information" and out is view


def test_grey_pair_stays_grey(weights):
    codec = _codec(weights)
    views = [np.repeat(v[..., :1], 3, axis=2) for v in _views(64, 48)]
    unit, info = _pair(views)
    coded = codec.encode(unit)
    for f in coded.recon:
        rgb = f.planes[0]
        assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1],
                                                                            rgb[..., 2])


def test_match_rows_finds_a_known_shift():
    from codecflow.codecs.learned.side_info import match_rows

    right = synth_rgb(120, 40, seed=4)
    left = np.empty_like(right)
    left[:, 7:] = right[:, :-7]  # left(x) = right(x - 7)
    left[:, :7] = right[:, :1]
    moved, cost = match_rows(left, right, -1)
    assert np.array_equal(moved[:, 20:-20], left[:, 20:-20])
    assert int(cost[:, 20:-20].max()) == 0
    with pytest.raises(CodecError, match="differ in size"):
        match_rows(left, right[:, :100], -1)


def test_exact_refiner_matches_the_float_network(weights):
    from codecflow.codecs.learned.side_info import (
        PIXEL_SCALE, ExactRefiner, build_refiner, input_planes, match_rows)

    torch.manual_seed(1)
    net = build_refiner({"channels": 8, "layers": 3})
    with torch.no_grad():
        net.net[-1].weight.normal_(0, 0.05)
    view, other = synth_rgb(64, 48, seed=5), synth_rgb(64, 48, seed=5, shift=4)
    moved, cost = match_rows(view, other, -1)
    got = ExactRefiner(net)(view, moved, cost, 20).astype(np.int32)

    def t(a):
        a = torch.from_numpy(np.ascontiguousarray(a)).float()
        return (a.permute(2, 0, 1) if a.dim() == 3 else a[None])[None]

    with torch.no_grad():
        corr = net(input_planes(t(view), t(moved), t(cost), torch.tensor([20.0])))
    want = np.clip(np.round(view + PIXEL_SCALE * corr[0].permute(1, 2, 0).numpy()), 0, 255)
    assert np.abs(got - want).max() <= 1
    assert np.mean(got != want) < 0.01


def test_refiner_weights_must_match_the_intra_weights(weights, tmp_path):
    from codecflow.codecs.learned.model import build_model
    from codecflow.codecs.learned.weights import save_weights

    torch.manual_seed(5)
    save_weights(build_model({"N": 32, "M": 48}).eval(), tmp_path / "learned_intra.pt",
                 {"data": ["another random init"]})
    with pytest.raises(CodecError, match="trained on learned-intra weights"):
        create_codec("learned-stereo-si", q=30, weights=str(weights / "learned_stereo_si.pt"),
                     intra_weights=str(tmp_path / "learned_intra.pt"))


def test_unknown_parameter_is_named(weights):
    with pytest.raises(CodecError, match="unknown parameter"):
        create_codec("learned-stereo-si", q=30, weights=str(weights / "learned_stereo_si.pt"),
                     intra_weights=str(weights / "learned_intra.pt"), first_view="left")


# ------------------------------------------------------------------ the shipped weights
needs_shipped = pytest.mark.skipif(not SHIPPED.is_file(),
                                   reason=f"no shipped refiner at {SHIPPED}")


def _write_mono(path, codec_name, pictures, q=8):
    from codecflow.codecs.container import CflWriter, stream_header

    h, w = pictures[0].shape[:2]
    info = StreamInfo(w, h, pix_fmt="rgb24", unit_kind="frame")
    codec = create_codec(codec_name, q=q)
    writer = CflWriter(path, stream_header(info, codec.header(), path.stem))
    for i, pic in enumerate(pictures):
        writer.write_unit(i, codec.encode(Unit("frame", i, path.stem, [Frame.rgb(pic)], info,
                                               first_frame=i, index=i)).records)
    writer.close(frames=len(pictures))


@needs_shipped
def test_decode_side_info_refines_two_mono_streams(tmp_path):
    from tests.conftest import run_cli

    left, right = _views(96, 64)
    _write_mono(tmp_path / "left.cfl", "learned-stereo-si", [left, left])
    _write_mono(tmp_path / "right.cfl", "learned-intra", [right])  # one frame only
    p = run_cli("decode", tmp_path / "left.cfl", "--side-info", tmp_path / "right.cfl",
                "--json", tmp_path / "r.json", timeout=600)
    assert p.returncode == 0, p.stderr
    import json

    r = json.loads((tmp_path / "r.json").read_text())[0]
    assert r["frames"] == 2
    assert r["side_info"]["pictures"] == {"refined": 1, "no side information": 1}
    assert "decoded without side information" in p.stderr
    # bad input: a side stream that is not a .cfl file, a stereo stream to refine
    (tmp_path / "junk.cfl").write_bytes(b"nonsense")
    p = run_cli("decode", tmp_path / "left.cfl", "--side-info", tmp_path / "junk.cfl")
    assert p.returncode != 0 and "junk.cfl" in p.stderr
    p = run_cli("decode", tmp_path / "left.cfl", "--side-info", tmp_path / "nothere.cfl")
    assert p.returncode != 0 and "nothere.cfl" in p.stderr and "no such file" in p.stderr


@needs_shipped
def test_shipped_refiner_gains_on_a_held_out_pair_and_never_loses_on_an_unrelated_view(
        shared_data):
    import cv2

    from codecflow.codecs.learned.intra import encode_rgb
    from codecflow.codecs.learned.stereo_si import SideInfoDecoder
    from codecflow.codecs.metrics import psnr
    from codecflow.training.stereo_data import read_rgb, split_pairs

    pairs = split_pairs(shared_data / "stereo")[1]
    kodak = sorted((shared_data / "images" / "kodak").glob("*.png"))
    if not pairs or not kodak:
        pytest.skip("no held-out stereo pair or Kodak picture in the data folder")
    codec = create_codec("learned-stereo-si", q=8)
    side = codec.side
    assert isinstance(side, SideInfoDecoder)
    gains = []
    for name, lp, rp in pairs[:3]:  # held-out pairs, downscaled to 384 pixels wide
        left, right = (read_rgb(p) for p in (lp, rp))
        size = (384, round(left.shape[0] * 384 / left.shape[1]))
        left, right = (cv2.resize(v, size, interpolation=cv2.INTER_AREA) for v in (left, right))
        _, dl = encode_rgb(codec.intra, left, 8)
        _, dr = encode_rgb(codec.intra, right, 8)
        refined, status = side.refine(dl, dr, 8, "left")
        gains.append(psnr(refined, left) - psnr(dl, left))
        assert gains[-1] >= -0.1, (name, status)
    assert np.mean(gains) > 0.1, gains
    unrelated = cv2.resize(read_rgb(kodak[0]), size, interpolation=cv2.INTER_AREA)
    _, du = encode_rgb(codec.intra, unrelated, 8)
    out, status = side.refine(dl, du, 8, "left")
    assert psnr(out, left) >= psnr(dl, left) - 0.1, status


@needs_shipped
def test_pipeline_pairs_refined_summary_equals_decode(tmp_path):
    """configs/stereo_images.yaml with learned-stereo-si: the summary counts refined views,
    and an independent strict decode reproduces the pipeline's pictures (PSNR equal)."""
    import json

    import cv2

    from tests.conftest import run_cli

    pairs = tmp_path / "pairs"
    pairs.mkdir()
    left = synth_rgb(172, 96, seed=3)
    cv2.imwrite(str(pairs / "p_L.png"), left[:, :-12, ::-1])
    cv2.imwrite(str(pairs / "p_R.png"), left[:, 12:, ::-1])  # left(x) = right(x - 12)
    out = tmp_path / "out"
    p = run_cli("run", ROOT / "configs/stereo_images.yaml", "--set", f"source.path={pairs}",
                "--set", "codec.name=learned-stereo-si", "--set", f"output.dir={out}",
                "--set", "stats.terminal=off", "--set", "workers=1", timeout=600)
    assert p.returncode == 0, p.stderr
    st = json.loads((out / "summary.json").read_text())["streams"]["p"]
    assert st["side_info"] == {"refined": 2}
    js = tmp_path / "dec.json"
    p = run_cli("decode", out, "--reference", pairs, "--json", js, "--strict", timeout=600)
    assert p.returncode == 0, p.stderr
    row = json.loads(js.read_text())[0]
    assert abs(row["psnr_rgb"] - st["psnr_rgb"]) < 1e-9
    assert row["side_info"]["pictures"] == {"refined": 2}
    assert "side information from the other view: 2 refined" in p.stdout


def test_refined_picture_is_the_same_with_any_thread_count(weights):
    codec = _codec(weights)
    view = synth_rgb(150, 90, seed=6)
    other = np.roll(view, -9, axis=1)  # left(x) = right(x - 9)
    old = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(codec.side.refine(view, other, 12, "left"))
    finally:
        torch.set_num_threads(old)
    assert all(s == "refined" for _, s in outs)
    assert all(np.array_equal(outs[0][0], o) for o, _ in outs[1:])

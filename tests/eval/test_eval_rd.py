"""RD sweeps and `codecflow eval` end to end on tiny synthetic inputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from codecflow.codecs.container import CflReader
from codecflow.errors import CodecError, ConfigError, SourceError
from codecflow.eval import cli, plot, rd

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


def synth_rgb(w, h, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 90 * np.sin(xx / (7.0 + seed) + yy / 23.0),
                    120 + 80 * np.cos(yy / 9.0 - xx / 31.0),
                    60 + 150 * (xx + yy) / (w + h)], axis=-1)
    img += rng.normal(0, 4, img.shape)
    img[h // 4:h // 2, w // 3:w // 2] = (220, 40, 50)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), synth_rgb(64, 48, 0)[..., ::-1])
    cv2.imwrite(str(d / "b.png"), synth_rgb(72, 40, 1)[..., ::-1])
    return d


def write_yuv(path, w, h, n):
    from codecflow.codecs import colour
    with open(path, "wb") as f:
        for i in range(n):
            fr = colour.rgb_to_i420(np.roll(synth_rgb(w, h, 2), 2 * i, axis=1))
            for p in fr.planes:
                f.write(p.tobytes())


def fake_published(d):
    d.mkdir(parents=True, exist_ok=True)
    (d / "fakejpeg.json").write_text(json.dumps({
        "name": "Fake JPEG", "results": {"bpp": [4.0, 0.5, 1.0, 2.0],
                                         "psnr-rgb": [40.0, 20.0, 25.0, 30.0]}}))
    (d / "notes.json").write_text(json.dumps({"no": "results"}))
    return d


def test_sweep_images_jpeg(images, tmp_path):
    out = tmp_path / "out"
    res = rd.sweep("jpeg", [20, 50], images, out)
    assert res["codec"] == "jpeg" and res["qs"] == [20, 50]
    assert set(res["per_image"]) == {"a", "b"}
    assert json.loads((out / "rd.json").read_text()) == res
    pts = res["points"]
    assert [p["q"] for p in pts] == [20, 50]
    assert pts[0]["bpp"] < pts[1]["bpp"] and pts[0]["psnr_rgb"] < pts[1]["psnr_rgb"]
    for p in pts:
        assert set(p) == {"q", "bpp", "psnr_rgb", "psnr_yuv", "psnr_y", "enc_s", "dec_s"}
    # rate is the real .cfl file size
    row = res["per_image"]["a"][0]
    cfl = out / "streams" / "jpeg_q20_a.cfl"
    assert row["bytes"] == cfl.stat().st_size
    assert row["bpp"] == pytest.approx(8 * row["bytes"] / (64 * 48))
    with CflReader(cfl) as r:
        h = r.header
        assert (h["codec"], h["width"], h["height"], h["pix_fmt"], h["q"]) == \
               ("jpeg", 64, 48, "rgb24", 20)
        assert h["range"] == "full" and h["matrix"] == "bt709"
        assert len(list(r.units())) == 1 and r.status.complete
    assert pts[0]["bpp"] == pytest.approx(np.mean([res["per_image"][k][0]["bpp"]
                                                   for k in ("a", "b")]))


def test_sweep_yuv_sequence_gop_and_frames(tmp_path):
    seq = tmp_path / "clip_64x48_25.yuv"
    write_yuv(seq, 64, 48, 5)
    res = rd.sweep("x264", [24, 44], seq, tmp_path / "x264", frames=4, gop=2)
    row = res["per_image"]["clip_64x48_25"][1]
    assert row["frames"] == 4 and row["psnr_y"] > 30
    with CflReader(tmp_path / "x264" / "streams" / "x264_q44_clip_64x48_25.cfl") as r:
        assert r.header["unit_kind"] == "gop" and r.header["gop"] == 2
        assert r.header["pix_fmt"] == "yuv420p" and r.header["fps"] == 25.0
        units = list(r.units())
        assert len(units) == 2 and [len(recs) for _, recs in units] == [2, 2]
    # a picture codec on a sequence: frame units
    res = rd.sweep("webp", [30], seq, tmp_path / "webp", frames=3, keep_streams=False)
    assert res["per_image"]["clip_64x48_25"][0]["frames"] == 3
    assert not (tmp_path / "webp" / "streams").exists()


def test_sources_and_errors(tmp_path):
    assert rd.parse_yuv_name("BasketballPass_416x240_50.yuv") == (416, 240, 50.0)
    assert rd.parse_yuv_name("/x/foo_97x61_29.97.yuv") == (97, 61, 29.97)
    with pytest.raises(SourceError, match="NAME_WxH_FPS"):
        rd.parse_yuv_name("foo.yuv")
    with pytest.raises(SourceError, match="no such"):
        rd.find_sources(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        rd.find_sources(tmp_path / "empty")
    with pytest.raises(CodecError, match="unknown codec"):
        rd.sweep("nope", [1], tmp_path, tmp_path / "o")


def test_parse_qs_and_params():
    assert cli.parse_qs("8,16,24") == [8, 16, 24]
    assert cli.parse_qs("8-56:16") == [8, 24, 40, 56]
    assert cli.parse_qs("0..2, 40") == [0, 1, 2, 40]
    for bad in ("", "a", "64", "10-5", "1-5:0"):
        with pytest.raises(ConfigError):
            cli.parse_qs(bad)
    p = cli.parse_params(["x264:preset=medium", "threads=2", "jpeg:optimize=true"],
                         ["x264", "jpeg"])
    assert p == {"x264": {"preset": "medium", "threads": 2},
                 "jpeg": {"threads": 2, "optimize": True}}
    with pytest.raises(ConfigError):
        cli.parse_params(["x265:preset=slow"], ["x264"])


def test_load_published(tmp_path):
    pub = plot.load_published(fake_published(tmp_path / "pub"))
    assert list(pub) == ["published:fakejpeg"]
    assert pub["published:fakejpeg"]["bpp"] == [0.5, 1.0, 2.0, 4.0]  # sorted by rate
    assert pub["published:fakejpeg"]["psnr_rgb"] == [20.0, 25.0, 30.0, 40.0]
    assert plot.load_published(tmp_path / "missing") == {}


def test_eval_cli_end_to_end(images, tmp_path, capsys):
    out = tmp_path / "ev"
    pub = fake_published(tmp_path / "pub")
    rc = cli.main(["--codec", "jpeg", "--q", "20,50", "--input", str(images),
                   "--out", str(out), "--published", str(pub), "--quiet"])
    assert rc == 0
    data = json.loads((out / "rd.json").read_text())
    assert list(data["codecs"]) == ["jpeg"] and data["anchors"] == ["jpeg"]
    assert len(data["codecs"]["jpeg"]["points"]) == 2
    assert [(r["test"], r["anchor"]) for r in data["bdrate"]] == [("jpeg", "published:fakejpeg")]
    assert (out / "rd.png").stat().st_size > 1000
    assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "bdrate.md").read_text()
    assert "published:fakejpeg" in md and "| 20 |" in md
    assert "BD-rate" in capsys.readouterr().out
    assert (out / "jpeg" / "rd.json").exists()


def test_eval_cli_two_codecs_anchor(images, tmp_path):
    out = tmp_path / "ev2"
    rc = cli.main(["--codec", "jpeg,webp", "--q", "16,32,48", "--input", str(images / "a.png"),
                   "--out", str(out), "--published", "none", "--quiet"])
    assert rc == 0
    data = json.loads((out / "rd.json").read_text())
    rows = {(r["test"], r["anchor"]): r for r in data["bdrate"]}
    assert list(rows) == [("webp", "jpeg")]
    md = (out / "bdrate.md").read_text()
    assert "| webp |" in md and "vs jpeg" in md
    # errors come back as exit codes with a message, not tracebacks
    assert cli.main(["--codec", "jpeg", "--anchor", "x264", "--input", str(images),
                     "--out", str(out), "--published", "none"]) != 0


def test_module_entry_point(images, tmp_path):
    r = subprocess.run([sys.executable, "-m", "codecflow.eval.cli", "--codec", "jpeg", "--q",
                        "30", "--input", str(images / "b.png"), "--out", str(tmp_path / "m"),
                        "--published", "none", "--quiet"],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m" / "rd.json").exists()


@pytest.mark.skipif(not (SHARED / "anchors" / "kodak").is_dir(),
                    reason="../shared/anchors/kodak (published Kodak curves) is not available")
def test_shared_published_anchors():
    pub = plot.load_published(SHARED / "anchors" / "kodak")
    assert {"published:jpeg", "published:webp", "published:bpg_444_x265_ycbcr"} <= set(pub)
    for cur in pub.values():
        assert cur["bpp"] == sorted(cur["bpp"]) and len(cur["bpp"]) == len(cur["psnr_rgb"])
    from codecflow.eval import bdrate
    j, w = pub["published:jpeg"], pub["published:webp"]
    assert bdrate.bd_rate(j["bpp"], j["psnr_rgb"], w["bpp"], w["psnr_rgb"]) < -20


@pytest.mark.skipif(not (SHARED / "data" / "images" / "kodak" / "kodim23.png").is_file(),
                    reason="../shared/data/images/kodak is not available")
def test_kodak_crop_x265_intra_beats_jpeg(tmp_path):
    img = cv2.imread(str(SHARED / "data" / "images" / "kodak" / "kodim23.png"))
    cv2.imwrite(str(tmp_path / "crop.png"), img[128:256, 256:448])
    j = rd.sweep("jpeg", [24, 40, 56], tmp_path / "crop.png", tmp_path / "j")
    x = rd.sweep("x265-intra", [16, 24, 32], tmp_path / "crop.png", tmp_path / "x",
                 params={"preset": "veryfast"})
    from codecflow.eval import bdrate
    bd = bdrate.bd_rate(*rd.curve(j), *rd.curve(x))
    assert bd is not None and bd < -20


def test_eval_cli_yuv_has_no_default_published(tmp_path):
    seq = tmp_path / "tiny_64x48_30.yuv"
    write_yuv(seq, 64, 48, 3)
    out = tmp_path / "evy"
    rc = cli.main(["--codec", "x265", "--q", "20,40", "--input", str(seq), "--gop", "3",
                   "--metric", "psnr_yuv", "--out", str(out), "--quiet"])
    assert rc == 0
    data = json.loads((out / "rd.json").read_text())
    assert data["published_dir"] is None and data["bdrate"] == []
    assert data["codecs"]["x265"]["per_image"]["tiny_64x48_30"][0]["frames"] == 3
    assert (out / "rd.png").exists()


def test_eval_out_has_a_default():
    """The README's `codecflow eval --codec ... --q ... --input DIR` needs no --out."""
    import argparse

    from codecflow.eval.cli import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--codec", "jpeg", "--q", "8,16", "--input", "x"])
    assert args.out == "out/eval"


@pytest.fixture
def pairs(tmp_path):
    d = tmp_path / "pairs"
    d.mkdir()
    for name, (w, h) in (("p0", (64, 48)), ("p1", (72, 40))):
        wide = synth_rgb(w + 6, h, 3)
        cv2.imwrite(str(d / f"{name}_L.png"), wide[:, 6:, ::-1])
        cv2.imwrite(str(d / f"{name}_R.png"), wide[:, :-6, ::-1])
    cv2.imwrite(str(d / "single.png"), synth_rgb(32, 32, 4)[..., ::-1])
    return d


def test_sweep_stereo_pairs(pairs, tmp_path):
    srcs = rd.find_sources(pairs)
    assert [(s.name, s.kind) for s in srcs] == [("p0", "pair"), ("p1", "pair"),
                                               ("single", "image")]
    pair_dir = tmp_path / "only_pairs"
    pair_dir.mkdir()
    for f in pairs.glob("p*_?.png"):
        (pair_dir / f.name).write_bytes(f.read_bytes())
    # a pair codec: one pair unit, rate over both views, per-view record bytes
    res = rd.sweep("jpeg", [40], pair_dir, tmp_path / "jpeg")
    row = res["per_image"]["p0"][0]
    assert row["frames"] == 1 and len(row["view_bytes"]) == 2
    assert row["bpp"] == pytest.approx(8 * row["bytes"] / (64 * 48 * 2))
    assert sum(row["view_bytes"]) < row["bytes"]
    assert row["psnr_rgb"] == pytest.approx(np.mean(row["psnr_rgb_views"]))
    with CflReader(tmp_path / "jpeg" / "streams" / "jpeg_q40_p0.cfl") as r:
        assert r.header["views"] == 2 and r.header["unit_kind"] == "pair"
    # a mono sequence codec: the pair as a two-frame GOP (left I, right P)
    res = rd.sweep("x265", [30], pair_dir, tmp_path / "x265")
    row = res["per_image"]["p1"][0]
    assert row["frames"] == 2 and row["bpp"] == pytest.approx(8 * row["bytes"] / (72 * 40 * 2))
    with CflReader(tmp_path / "x265" / "streams" / "x265_q30_p1.cfl") as r:
        assert r.header["views"] == 1 and r.header["gop"] == 2


def test_sweep_video_file(tmp_path):
    from codecflow.codecs import colour
    from codecflow.stages.sources.video import write_video_file

    clip = tmp_path / "moving.mkv"
    write_video_file(str(clip), [colour.rgb_to_i420(np.roll(synth_rgb(64, 48, 2), 2 * i, 1))
                                 for i in range(5)], fps=25.0)
    res = rd.sweep("x264", [30], clip, tmp_path / "out", frames=4, gop=2)
    row = res["per_image"]["moving"][0]
    assert row["frames"] == 4 and row["psnr_y"] > 28

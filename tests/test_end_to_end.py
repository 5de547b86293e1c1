"""End-to-end: real pipelines (supervisor, source, workers, sink as OS processes over ZeroMQ)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codecflow.codecs.container import CflReader
from tests.conftest import ROOT, child_pids, run_cli, synth_rgb, write_yuv


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def frame_indices(cfl: Path) -> list:
    with CflReader(cfl) as r:
        idx = [rec.frame_index for _, recs in r.units() for rec in recs]
        assert r.status.complete, r.status.describe()
    return idx


def test_yuv_pipeline_psnr_matches_independent_decode(tmp_path):
    src = write_yuv(tmp_path / "clip_96x64_25.yuv", 96, 64, 12)
    out = tmp_path / "out"
    p = run_cli("run", ROOT / "configs/yuv_batch.yaml", "--set", f"source.path={src}",
                "--set", f"output.dir={out}", "--set", "codec.gop=4", "--set", "codec.q=40")
    assert p.returncode == 0, p.stderr
    s = summary(out)
    st = s["streams"]["clip_96x64_25"]
    assert st["frames"] == 12 and st["units"] == 3 and st["complete"]
    cfl = out / "clip_96x64_25.cfl"
    assert st["bytes"] == cfl.stat().st_size
    assert st["bpp"] == pytest.approx(8 * cfl.stat().st_size / (96 * 64 * 12))
    assert st["kbps"] == pytest.approx(8 * cfl.stat().st_size * 25 / 12 / 1000)
    assert frame_indices(cfl) == list(range(12))
    # independent decode of the written bytes
    dec = tmp_path / "dec.yuv"
    js = tmp_path / "dec.json"
    p = run_cli("decode", cfl, "--output", dec, "--reference", src, "--json", js)
    assert p.returncode == 0, p.stderr
    r = json.loads(js.read_text())[0]
    for k in ("psnr_y", "psnr_yuv", "psnr_rgb"):
        assert r[k] == pytest.approx(st[k], abs=1e-9), k
    # the recon sink wrote exactly what the decoder reconstructs
    recon = out / "recon" / "clip_96x64_25.yuv"  # the size is not repeated
    assert recon.read_bytes() == dec.read_bytes()
    assert dec.stat().st_size == src.stat().st_size


def test_batch_folder_one_cfl_per_file(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_yuv(folder / "a_64x48_30.yuv", 64, 48, 5)
    write_yuv(folder / "b_80x32_25.yuv", 80, 32, 3, seed=2)
    out = tmp_path / "out"
    p = run_cli("run", ROOT / "configs/yuv_batch.yaml", "--set", f"source.path={folder}",
                "--set", f"output.dir={out}", "--set", "codec.name=x265")
    assert p.returncode == 0, p.stderr
    s = summary(out)
    assert set(s["streams"]) == {"a_64x48_30", "b_80x32_25"}
    assert s["streams"]["a_64x48_30"]["frames"] == 5
    assert s["streams"]["b_80x32_25"]["frames"] == 3
    assert s["frames"] == 8
    assert (out / "a_64x48_30.cfl").exists() and (out / "b_80x32_25.cfl").exists()
    for k in ("frames", "units", "bytes", "bpp", "kbps", "psnr_y", "psnr_yuv", "psnr_rgb", "fps",
              "dropped"):
        assert k in s and k in s["streams"]["a_64x48_30"], k


@pytest.mark.parametrize("codec", ["learned-stereo", "learned-intra", "jpeg", "webp",
                                   "x265-intra"])
def test_demo_stereo_pairs(tmp_path, codec):
    out = tmp_path / "out"
    p = run_cli("run", ROOT / "configs/demo_stereo.yaml", "--set", f"output.dir={out}",
                "--set", "source.frames=4", "--set", f"codec.name={codec}")
    assert p.returncode == 0, p.stderr
    s = summary(out)
    (name,) = s["streams"]
    st = s["streams"][name]
    assert st["views"] == 2 and st["frames"] == 4 and st["units"] == 4
    with CflReader(out / f"{name}.cfl") as r:
        units = list(r.units())
        assert r.header["views"] == 2
    # one record per view, in view order, both with the pair's frame index
    assert len(units) == 4 and all([(r.frame_index, r.view) for r in recs] == [(i, 0), (i, 1)]
                                   for i, (_, recs) in enumerate(units))
    assert st["psnr_rgb"] > 22


def test_stereo_images_learned_stereo_per_view_and_decode(tmp_path):
    """configs/stereo_images.yaml: NAME.cfl per pair, per-view stats, the second view cheaper
    than the first (it is coded against it), summary PSNR == independent decode."""
    import cv2

    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for i, (w, h) in enumerate([(160, 96), (97, 61)]):
        left = synth_rgb(w + 12, h, seed=i)
        cv2.imwrite(str(pairs / f"p{i}_L.png"), left[:, 12:, ::-1])
        cv2.imwrite(str(pairs / f"p{i}_R.png"), left[:, :-12, ::-1])  # 12 px disparity
    out = tmp_path / "out"
    p = run_cli("run", ROOT / "configs/stereo_images.yaml", "--set", f"source.path={pairs}",
                "--set", f"output.dir={out}", "--set", "stats.terminal=off")
    assert p.returncode == 0, p.stderr
    s = summary(out)
    assert set(s["streams"]) == {"p0", "p1"} and s["codec"]["name"] == "learned-stereo"
    st = s["streams"]["p0"]
    left, right = st["per_view"]["left"], st["per_view"]["right"]
    assert left["bytes"] + right["bytes"] < st["bytes"]
    assert right["bytes"] < left["bytes"]
    assert abs((left["psnr_rgb"] + right["psnr_rgb"]) / 2 - st["psnr_rgb"]) < 1e-9
    assert sorted(f.name for f in (out / "recon").iterdir()) == \
        ["p0_L.png", "p0_R.png", "p1_L.png", "p1_R.png"]
    js = tmp_path / "dec.json"
    p = run_cli("decode", out, "--reference", pairs, "--json", js, "--strict")
    assert p.returncode == 0, p.stderr
    for row in json.loads(js.read_text()):
        assert abs(row["psnr_rgb"] - s["streams"][row["stream"]]["psnr_rgb"]) < 1e-9


def test_learned_stereo_demo_decodes_with_other_thread_counts(tmp_path):
    """Workers on 1 torch thread, `codecflow decode` on 2 and 3: the same pictures, no
    warning (the failure once seen at 256x160)."""
    out = tmp_path / "out"
    p = run_cli("run", ROOT / "configs/demo_stereo.yaml", "--set", f"output.dir={out}",
                "--set", "source.frames=2", "--set", "codec.threads=1",
                "--set", "stats.terminal=off")
    assert p.returncode == 0, p.stderr
    (name,) = summary(out)["streams"]
    decoded = []
    for t in (2, 3):
        dec = tmp_path / f"d{t}.yuv"
        p = run_cli("decode", out / f"{name}.cfl", "-o", dec, "--threads", str(t), "--strict")
        assert p.returncode == 0, p.stderr
        assert "differ" not in p.stderr and "CRC" not in p.stderr
        decoded.append([(tmp_path / f"d{t}_{v}.yuv").read_bytes() for v in "LR"])
    assert decoded[0] == decoded[1] and len(decoded[0][1]) > 0
    recon = sorted((out / "recon").glob("*.yuv"))
    assert [r.read_bytes() for r in recon] == decoded[0]  # what the workers reconstructed


def test_demo_video_learned_intra_psnr_matches_decode(tmp_path):
    """The default demo (learned-intra): summary PSNR == independent decode of the bytes."""
    src = write_yuv(tmp_path / "lc_96x64_25.yuv", 96, 64, 4)
    out = tmp_path / "out"
    p = run_cli("run", ROOT / "configs/yuv_batch.yaml", "--set", f"source.path={src}",
                "--set", f"output.dir={out}", "--set", "codec.name=learned-intra",
                "--set", "codec.q=50")
    assert p.returncode == 0, p.stderr
    st = summary(out)["streams"]["lc_96x64_25"]
    assert st["units"] == 4 and st["unit_kind"] == "frame"
    js = tmp_path / "d.json"
    p = run_cli("decode", out / "lc_96x64_25.cfl", "--output", tmp_path / "d.yuv",
                "--reference", src, "--json", js)
    assert p.returncode == 0, p.stderr
    r = json.loads(js.read_text())[0]
    assert r["psnr_yuv"] == pytest.approx(st["psnr_yuv"], abs=1e-9)
    assert (tmp_path / "d.yuv").read_bytes() == \
        (out / "recon" / "lc_96x64_25.yuv").read_bytes()


def test_demo_video_tcp_transport(tmp_path):
    out = tmp_path / "out"
    p = run_cli("run", ROOT / "configs/demo_video.yaml", "--set", f"output.dir={out}",
                "--set", "source.frames=16", "--set", "transport.scheme=tcp",
                "--set", "codec.name=x264")
    assert p.returncode == 0, p.stderr
    assert summary(out)["frames"] == 16


def test_kill_worker_mid_run_output_complete_and_in_order(tmp_path):
    src = write_yuv(tmp_path / "long_160x96_30.yuv", 160, 96, 120)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "codecflow.cli", "run", str(ROOT / "configs/yuv_batch.yaml"),
            "--set", f"source.path={src}", "--set", f"output.dir={out}", "--set", "workers=2",
            "--set", "codec.name=x265", "--set", "codec.gop=4", "--set", "output.recon=false",
            "--set", "heartbeat.timeout=1.5", "--set", "codec.params={preset: medium}"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    killed = None
    while time.time() < deadline and killed is None:
        time.sleep(0.1)
        jl = out / "units.jsonl"
        if jl.exists() and len(jl.read_text().splitlines()) >= 3:
            pids = child_pids(proc.pid, "encode")
            if len(pids) == 2:
                killed = pids[0]
                os.kill(killed, signal.SIGKILL)
    assert killed, "could not find a running encode worker to kill"
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert "died" in stderr
    s = summary(out)
    assert s["frames"] == 120 and s["complete"]
    assert frame_indices(out / "long_160x96_30.cfl") == list(range(120))  # none lost, no dups


def test_sigint_drains_and_closes_files(tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "codecflow.cli", "run", str(ROOT / "configs/demo_video.yaml"),
            "--set", f"output.dir={out}", "--set", "source.frames=100000",
            "--set", "workers=1", "--set", "codec.name=x264"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.2)
        jl = out / "units.jsonl"
        if jl.exists() and len(jl.read_text().splitlines()) >= 2:
            break
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    s = summary(out)
    assert s["frames"] > 0
    (name,) = s["streams"]
    idx = frame_indices(out / f"{name}.cfl")  # has its end record: closed cleanly
    assert idx == list(range(len(idx))) and len(idx) == s["frames"]
    # ... but the run did not code the whole source: not complete, and it says why
    assert not s["complete"] and not s["streams"][name]["complete"]
    assert s["incomplete_reason"] == f"stopped at frame {s['frames']} of 100000"


def test_live_mode_drops_and_counts(tmp_path):
    out = tmp_path / "out"
    p = run_cli("run", ROOT / "configs/demo_video.yaml", "--set", f"output.dir={out}",
                "--set", "mode=live", "--set", "source.frames=150", "--set", "queue=1",
                "--set", "workers=1", "--set", "codec.name=x265", "--set", "codec.gop=2",
                "--set", "codec.params={preset: medium}")
    assert p.returncode == 0, p.stderr
    s = summary(out)
    assert s["dropped"] > 0
    assert s["frames"] + s["dropped"] == 150


# ------------------------------------------------------------------------------ bad inputs
def test_wrong_yuv_size_fails_before_writing(tmp_path):
    bad = tmp_path / "bad_64x48_30.yuv"
    bad.write_bytes(b"\0" * (64 * 48 * 3 // 2 * 2 + 7))
    out = tmp_path / "out"
    p = run_cli("run", ROOT / "configs/yuv_batch.yaml", "--set", f"source.path={bad}",
                "--set", f"output.dir={out}")
    assert p.returncode != 0
    assert "bad_64x48_30.yuv" in p.stderr
    assert not list(out.glob("*.cfl")) and not (out / "summary.json").exists()


def test_unknown_config_key_validate(tmp_path):
    p = run_cli("validate", ROOT / "configs/demo_video.yaml", "--set", "codec.qualty=3")
    assert p.returncode != 0 and "qualty" in p.stderr


def test_validate_ok():
    p = run_cli("validate", ROOT / "configs/demo_video.yaml")
    assert p.returncode == 0, p.stderr
    assert "OK" in p.stdout


def test_missing_camera(tmp_path):
    p = run_cli("run", ROOT / "configs/camera.yaml", "--set", "source.device=/dev/video99",
                "--set", f"output.dir={tmp_path / 'o'}", timeout=120)
    assert p.returncode != 0
    assert "/dev/video99" in p.stderr


def test_wrong_codec_name(tmp_path):
    p = run_cli("run", ROOT / "configs/demo_video.yaml", "--set", "codec.name=h266",
                "--set", f"output.dir={tmp_path / 'o'}")
    assert p.returncode != 0 and "h266" in p.stderr and "x264" in p.stderr


def test_corrupt_and_truncated_cfl(tmp_path):
    src = write_yuv(tmp_path / "c_64x48_30.yuv", 64, 48, 8)
    out = tmp_path / "out"
    run_cli("run", ROOT / "configs/yuv_batch.yaml", "--set", f"source.path={src}",
            "--set", f"output.dir={out}", "--set", "codec.gop=2", "--set", "codec.name=jpeg",
            check=True)
    cfl = out / "c_64x48_30.cfl"
    data = cfl.read_bytes()
    # truncated in the middle: whole units before the cut still decode
    cut = tmp_path / "cut.cfl"
    cut.write_bytes(data[: len(data) * 2 // 3])
    p = run_cli("decode", cut, "--output", tmp_path / "cut.yuv", "--strict")
    assert p.returncode != 0 and "whole units decoded" in p.stderr
    n = int(p.stdout.split(" frames")[0].split()[-1])
    assert 0 < n < 8
    assert (tmp_path / "cut.yuv").stat().st_size == n * 64 * 48 * 3 // 2
    # one flipped byte in a payload: the reader stops there and says so
    bad = bytearray(data)
    bad[len(data) // 2] ^= 0xFF
    corrupt = tmp_path / "corrupt.cfl"
    corrupt.write_bytes(bytes(bad))
    p = run_cli("decode", corrupt, "--output", tmp_path / "x.yuv", "--strict")
    assert p.returncode != 0 and "corrupt record" in p.stderr
    # not a .cfl at all
    p = run_cli("decode", src, "--output", tmp_path / "y.yuv")
    assert p.returncode != 0 and "not a codecflow .cfl file" in p.stderr


@pytest.mark.slow
def test_real_yuv_basketball(tmp_path, shared_data):
    src = shared_data / "video" / "BasketballPass_416x240_50.yuv"
    out = tmp_path / "out"
    p = run_cli("run", ROOT / "configs/yuv_batch.yaml", "--set", f"source.path={src}",
                "--set", f"output.dir={out}", "--set", "source.frames=32")
    assert p.returncode == 0, p.stderr
    st = summary(out)["streams"]["BasketballPass_416x240_50"]
    assert st["frames"] == 32 and 28 < st["psnr_yuv"] < 50
    js = tmp_path / "d.json"
    p = run_cli("decode", out / "BasketballPass_416x240_50.cfl", "--reference", src,
                "--json", js)
    assert p.returncode == 0, p.stderr
    assert json.loads(js.read_text())[0]["psnr_yuv"] == pytest.approx(st["psnr_yuv"], abs=1e-9)


def test_stages_started_alone_over_tcp(tmp_path):
    """`codecflow stage NAME --config C` with explicit tcp endpoints, as on several hosts."""
    from codecflow.pipeline.transport import free_tcp_port

    out = tmp_path / "out"
    keys = tmp_path / "keys"
    subprocess.run([sys.executable, "-m", "codecflow.cli", "keys", str(keys)], cwd=ROOT,
                   check=True, capture_output=True)
    assert (keys / "client.key_secret").stat().st_mode & 0o077 == 0
    sets = ["--set", f"output.dir={out}", "--set", "source.frames=12", "--set", "codec.name=x264",
            "--set", f"transport.dispatch=tcp://127.0.0.1:{free_tcp_port()}",
            "--set", f"transport.sink=tcp://127.0.0.1:{free_tcp_port()}"]
    cfg = ROOT / "configs/demo_video.yaml"
    base = [sys.executable, "-m", "codecflow.cli", "stage"]
    # tcp means CURVE: a stage without the run's keys refuses to start, naming the key
    alone = subprocess.run(base + ["sink", "--config", str(cfg), *sets], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert alone.returncode == 2 and "transport.keys" in alone.stderr, alone.stderr
    sets += ["--set", f"transport.keys={keys}"]
    def start(name, *extra):
        return subprocess.Popen(base + [name, "--config", str(cfg), *sets, *extra], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = [start("sink"), start("encode", "--worker", "0"), start("encode", "--worker", "1")]
    for w in procs[1:]:  # workers started on "other hosts" are up before the source starts
        line = ""
        while "ready:" not in line:
            line = w.stderr.readline()
            assert line, "encode worker exited before it was ready"
    procs.append(start("source"))
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0, 0, 0], [p.stderr.read() for p in procs]
    assert summary(out)["frames"] == 12
    assert frame_indices(out / "synthetic.cfl") == list(range(12))


def test_worker_codec_failure_stops_fast_naming_stage(tmp_path):
    t0 = time.time()
    p = run_cli("run", ROOT / "configs/demo_video.yaml", "--set", f"output.dir={tmp_path / 'o'}",
                "--set", "codec.name=jpeg", "--set", "codec.params={bogus: 1}")
    assert p.returncode == 3
    assert "bogus" in p.stderr and "encode-0" in p.stderr
    assert time.time() - t0 < 30

"""Environment errors: each is a clear message and exit 2 before anything is written, or exit 3
during the run with every output file whole (a full disk)."""

import json
import resource
import socket
import subprocess
import sys
import time

import numpy as np

from tests.conftest import ROOT, run_cli, write_yuv

DEMO = ROOT / "configs/demo_video.yaml"


def run_demo(out, *sets, timeout=120):
    return run_cli("run", DEMO, "--set", f"output.dir={out}", "--set", "codec.name=x264",
                   *sum((["--set", s] for s in sets), []), timeout=timeout)


def assert_refused(p, *words):
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    for w in words:
        assert w in p.stderr, (w, p.stderr[-2000:])


def test_output_dir_that_is_a_file(tmp_path):
    f = tmp_path / "out"
    f.write_text("keep me")
    assert_refused(run_demo(f), "output.dir", "is not a folder")
    assert f.read_text() == "keep me"
    assert_refused(run_demo(f / "sub"), "output.dir", "is not a folder")


def test_config_path_that_is_a_folder(tmp_path):
    assert_refused(run_cli("run", tmp_path), "config file", "is a folder")


def test_unresolvable_host_fails_at_once(tmp_path):
    t0 = time.time()
    p = run_demo(tmp_path / "o", "transport.scheme=tcp", "transport.host=no-such-host.invalid")
    assert_refused(p, "transport.host", "no-such-host.invalid")
    assert time.time() - t0 < 30
    assert not (tmp_path / "o").exists()


def test_ports_in_use_fail_within_seconds_and_write_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for sets, key in ((("transport.scheme=tcp", f"transport.port={port}"), "transport.port"),
                          ((f"stats.prometheus_port={port}",), "stats.prometheus_port")):
            out = tmp_path / key
            t0 = time.time()
            assert_refused(run_demo(out, *sets), key, "in use")
            assert time.time() - t0 < 10
            assert not out.exists()  # not even pipeline.yaml


def test_source_that_cannot_open_leaves_no_pipeline_yaml(tmp_path):
    out = tmp_path / "o"
    p = run_cli("run", ROOT / "configs/yuv_batch.yaml", "--set", f"source.path={tmp_path}/none",
                "--set", f"output.dir={out}")
    assert_refused(p, "nothing was written")
    assert not (out / "pipeline.yaml").exists()


def test_frame_too_large_is_refused_before_allocating(tmp_path):
    src = tmp_path / "huge_60000x60000_30.yuv"
    src.write_bytes(b"")
    p = run_cli("run", ROOT / "configs/yuv_batch.yaml", "--set", f"source.path={src}",
                "--set", f"output.dir={tmp_path / 'o'}")
    assert_refused(p, "60000x60000", "larger than codecflow takes")


def test_full_disk_keeps_whole_units_and_frames_and_says_why(tmp_path):
    """The output hits a file size limit (as a full disk would) after the first unit: exit 3,
    the error logged once, the .cfl and the recon keep whole units / frames that agree, and
    summary.json says why the run is incomplete."""
    src = write_yuv(tmp_path / "clip_320x192_30.yuv", 320, 192, 12)
    out = tmp_path / "o"
    frame = 320 * 192 * 3 // 2

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (3 * frame, 3 * frame))  # unit 2 cannot fit

    p = subprocess.run([sys.executable, "-m", "codecflow.cli", "run",
                        str(ROOT / "configs/yuv_batch.yaml"), "--set", f"source.path={src}",
                        "--set", f"output.dir={out}", "--set", "codec.name=x264",
                        "--set", "codec.gop=2"], cwd=ROOT, preexec_fn=limit,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stderr[-2000:]
    errors = [ln for ln in p.stderr.splitlines() if " ERROR " in ln]
    assert sum("cannot write the output" in ln for ln in errors) == 1, p.stderr[-3000:]
    assert "INCOMPLETE: cannot write the output" in p.stderr  # the final panel line
    assert p.stderr.count("stage sink failed") == 1
    s = json.loads((out / "summary.json").read_text())
    assert not s["complete"] and "File too large" in s["error"]
    st = s["streams"]["clip_320x192_30"]
    recon = (out / "recon" / "clip_320x192_30.yuv").read_bytes()
    assert len(recon) % frame == 0 and len(recon) // frame == st["frames"] >= 2
    assert st["bytes"] == (out / "clip_320x192_30.cfl").stat().st_size
    dec = tmp_path / "dec.yuv"
    d = run_cli("decode", out / "clip_320x192_30.cfl", "--output", dec)
    assert d.returncode == 0, d.stderr
    assert dec.read_bytes() == recon
    src_frames = np.frombuffer(src.read_bytes()[:len(recon)], np.uint8).astype(float)
    mse = np.mean((np.frombuffer(recon, np.uint8) - src_frames) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 25  # the frames are the source's, in order

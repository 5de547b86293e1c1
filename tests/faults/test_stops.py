"""Hard stops at random points of real runs: kill -9 of the supervisor, two SIGINTs 5 ms apart,
an encode worker or the dispatcher frozen (SIGSTOP) past the heartbeat timeout. Whatever was written must be
whole and in order: the .cfl holds frames 0..n-1 with no hole, each decoded frame is the
source's frame of the same index, and the recon equals the decode."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from codecflow.codecs.container import CflReader
from tests.conftest import ROOT, child_pids, moving_i420, run_cli, write_yuv

W, H, N = 160, 96, 160
FRAME = W * H * 3 // 2


def finished(proc, tmp_path, timeout: float) -> int:
    """The run's exit code; a run still going after ``timeout`` fails the test with the end
    of its log (where the dispatcher says what it waits for)."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the run did not end in {timeout:.0f} s; its log ends:\n" +
                             (tmp_path / "log").read_text()[-6000:]) from None


def start(tmp_path, *sets, preset: str = "medium"):
    src = write_yuv(tmp_path / f"clip_{W}x{H}_30.yuv", W, H, N)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "codecflow.cli", "run", str(ROOT / "configs/yuv_batch.yaml"),
            "--set", f"source.path={src}", "--set", f"output.dir={out}", "--set", "workers=2",
            "--set", "codec.name=x265", "--set", "codec.gop=4",
            "--set", f"codec.params={{preset: {preset}}}", *sum((["--set", s] for s in sets), [])]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "log", "w"), start_new_session=True)
    return proc, out


def wait_for_units(out, n: int, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        jl = out / "units.jsonl"
        if jl.exists() and len(jl.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} units written in {timeout} s")


def check_written_output(tmp_path, out) -> tuple:
    """-> (frames in the file, file complete). Asserts no hole and the right frames."""
    cfl = out / f"clip_{W}x{H}_30.cfl"
    with CflReader(cfl) as r:
        idx = [rec.frame_index for _, recs in r.units() for rec in recs]
        complete = r.status.complete
    assert idx == list(range(len(idx))), f"frames out of order or missing: {idx[:50]}"
    dec = tmp_path / "dec.yuv"
    d = run_cli("decode", cfl, "--output", dec)
    assert d.returncode == 0 or not idx, d.stderr
    got = np.frombuffer(dec.read_bytes(), np.uint8) if idx else np.zeros(0, np.uint8)
    assert got.size == len(idx) * FRAME
    for t, (y, _, _) in enumerate(moving_i420(W, H, len(idx))):
        dy = got[t * FRAME:t * FRAME + W * H].reshape(H, W).astype(float)
        psnr = 10 * np.log10(255 ** 2 / max(np.mean((dy - y) ** 2), 1e-9))
        assert psnr > 28, f"frame {t}: PSNR-Y {psnr:.1f} dB against the source (shifted?)"
    recon = out / "recon" / f"clip_{W}x{H}_30.yuv"
    if recon.exists() and idx:
        # the recon holds whole frames, the file's frames first (a unit may be in the recon
        # and not yet in the .cfl when the sink was killed between the two)
        rb = recon.read_bytes()
        assert len(rb) % FRAME == 0
        assert rb[:got.size] == got.tobytes()[:len(rb)]
    return len(idx), complete


def _wait_gone(pids: list, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and
                 open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"stage processes {alive} still running {timeout} s after the stop")


def test_kill_9_of_the_supervisor_leaves_no_hole(tmp_path):
    rng = random.Random(7)
    proc, out = start(tmp_path)
    wait_for_units(out, rng.randint(2, 12))
    stages = child_pids(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _wait_gone(stages)  # the stages notice their parent is gone and stop
    n, complete = check_written_output(tmp_path, out)
    summary = out / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        assert s["frames"] == n
        assert s["complete"] == (complete and n == N)


@pytest.mark.parametrize("stage", ["source", "sink"])
def test_kill_9_of_a_stage_leaves_no_hole(tmp_path, stage):
    """The run fails (exit 3, the stage named) and what was written is whole and in order."""
    rng = random.Random(hash(stage) % 1000)
    proc, out = start(tmp_path)
    wait_for_units(out, rng.randint(2, 12))
    pids = child_pids(proc.pid, stage)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    assert finished(proc, tmp_path, 180) == 3
    log = (tmp_path / "log").read_text()
    assert f"{stage} (killed by signal SIGKILL)" in log, log[-2000:]
    n, complete = check_written_output(tmp_path, out)
    assert n < N and not complete
    if stage == "source":  # the sink closes the run: it says why it is incomplete
        s = json.loads((out / "summary.json").read_text())
        assert s["frames"] == n and not s["complete"] and s["incomplete_reason"]


def test_two_sigints_5_ms_apart_leave_no_hole(tmp_path):
    rng = random.Random(11)
    proc, out = start(tmp_path)
    wait_for_units(out, rng.randint(2, 12))
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.005)
    os.kill(proc.pid, signal.SIGINT)
    finished(proc, tmp_path, 120)
    n, complete = check_written_output(tmp_path, out)
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == n and not s["complete"] and s["incomplete_reason"]


def test_worker_frozen_past_the_heartbeat_timeout(tmp_path):
    # a slower preset: the run is still going when the frozen worker comes back
    proc, out = start(tmp_path, "heartbeat.timeout=1.0", "heartbeat.interval=0.2",
                      preset="slower")
    wait_for_units(out, 3)
    workers = child_pids(proc.pid, "encode")
    assert workers
    os.kill(workers[0], signal.SIGSTOP)
    time.sleep(2.5)  # presumed dead: its units go to the other worker
    os.kill(workers[0], signal.SIGCONT)  # it comes back and sends its late units: duplicates
    assert finished(proc, tmp_path, 180) == 0, (tmp_path / "log").read_text()[-2000:]
    n, complete = check_written_output(tmp_path, out)
    assert n == N and complete
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] and s["frames"] == N


@pytest.mark.parametrize("at_unit", [1, 4])
def test_dispatcher_frozen_past_the_heartbeat_timeout(tmp_path, at_unit):
    """The source process (the dispatcher) frozen for longer than the heartbeat timeout, as on
    a machine that stalls: the workers' links drop and reconnect, what was on its way is lost,
    and the time it did not listen must not make it give up on its workers."""
    proc, out = start(tmp_path, "heartbeat.timeout=1.0", "heartbeat.interval=0.2")
    wait_for_units(out, at_unit)
    (source,) = child_pids(proc.pid, "source")
    os.kill(source, signal.SIGSTOP)
    time.sleep(2.5)
    os.kill(source, signal.SIGCONT)
    assert finished(proc, tmp_path, 120) == 0, (tmp_path / "log").read_text()[-2000:]
    n, complete = check_written_output(tmp_path, out)
    assert n == N and complete

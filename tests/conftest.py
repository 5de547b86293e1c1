import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_cli(*args, timeout=300, cwd=ROOT, check=False, **kw):
    """Run `python -m codecflow.cli ARGS` as a real process."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.run([sys.executable, "-m", "codecflow.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}")
    return proc


def child_pids(parent: int, stage: str | None = None) -> list:
    """Processes whose parent is ``parent`` (from /proc); with ``stage``, only the pipeline
    stages of that name (`codecflow stage STAGE ...`)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            cmd = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and (stage is None or
                               b"stage" in cmd and stage.encode() in cmd):
            pids.append(int(d))
    return pids


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """A test that fails while a process it started is still running (a supervisor, a stage)
    kills it, so a hung run does not outlive the test and slow the ones after it. A killed
    supervisor's stages notice that their parent is gone and stop on their own."""
    yield
    for pid in child_pids(os.getpid()):
        if _alive(pid):
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def moving_i420(w: int, h: int, n: int, seed: int = 0) -> list:
    """A small moving, textured test sequence as (Y, U, V) uint8 planes."""
    rng = np.random.default_rng(seed)
    big = rng.integers(0, 255, size=(h // 4 + 8, w // 4 + 8)).astype(np.float32)
    import cv2

    tex = cv2.resize(big, ((w // 4 + 8) * 4, (h // 4 + 8) * 4), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for t in range(n):
        y = 0.6 * tex[t % 8:t % 8 + h, 2 * t % 16:2 * t % 16 + w] + 0.4 * (xx * 255.0 / w)
        y = np.clip(y, 16, 235).astype(np.uint8)
        cw, ch = (w + 1) // 2, (h + 1) // 2
        u = np.full((ch, cw), 128, np.uint8) + (np.arange(cw) * 40 // cw).astype(np.uint8)
        v = np.full((ch, cw), 120, np.uint8) + ((np.arange(ch)[:, None] + t) % 30).astype(np.uint8)
        out.append((y, u, v))
    return out


def write_yuv(path: Path, w: int, h: int, n: int, seed: int = 0) -> Path:
    with open(path, "wb") as f:
        for planes in moving_i420(w, h, n, seed):
            for p in planes:
                f.write(p.tobytes())
    return path


def synth_rgb(w, h, seed=0, shift=0):
    """Smooth gradients + fine texture + a couple of hard-edged shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx = xx - shift
    img = np.stack([128 + 90 * np.sin(xx / 9.0 + yy / 23.0),
                    120 + 80 * np.cos(yy / 7.0 - xx / 31.0),
                    60 + 150 * (xx + yy) / (w + h)], axis=-1)
    img += rng.normal(0, 4, img.shape)
    x0 = w // 3 + shift
    img[h // 4:h // 2, max(0, x0):max(0, x0 + w // 5)] = (220, 40, 50)
    img[(yy - 0.7 * h) ** 2 + (xx - 0.7 * w) ** 2 < (h / 6) ** 2] = (30, 200, 90)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA

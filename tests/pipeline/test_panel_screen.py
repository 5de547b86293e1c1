"""The live panel as a user sees it: a real pipeline under a pseudo-terminal, its output fed to
a terminal emulator (pyte), the final screen checked."""

import json
import os
import pty
import select
import struct
import sys
import time

import pytest

from tests.conftest import ROOT

pyte = pytest.importorskip("pyte", reason="pyte (a terminal emulator, dev extra) is absent")


def run_under_pty(args: list, cols: int, rows: int = 50, timeout: float = 180) -> tuple:
    """-> (final screen lines, raw bytes, exit code)."""
    import fcntl
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # child: the pipeline, on the pseudo-terminal
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, *args])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    raw, code, deadline = b"", None, time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                data = b""
            if data:
                raw += data
                stream.feed(data)
                continue
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
    os.close(fd)
    assert code is not None, "the pipeline did not finish under the pseudo-terminal"
    return [line.rstrip() for line in screen.display], raw, code


@pytest.mark.parametrize("cols", [80, 120])
def test_demo_panel_fits_logs_stay_above_and_final_frame_is_the_summary(tmp_path, cols):
    out = tmp_path / "out"
    lines, raw, code = run_under_pty(
        ["run_pipeline.py", "configs/demo_video.yaml", "--set", f"output.dir={out}",
         "--set", "codec.name=x264"], cols)
    assert code == 0, b"\n".join(raw.splitlines()[-20:]).decode(errors="replace")
    s = json.loads((out / "summary.json").read_text())
    text = "\n".join(lines)
    assert b"starting: loading x264 in 2 encode workers" in raw  # the loading state
    bar = next(i for i, ln in enumerate(lines) if ln.startswith("[synthetic]"))
    assert "24/24 frames" in lines[bar]
    assert lines[bar + 1].startswith(f"done: {s['frames']} frames, {s['bytes']} bytes, "
                                     f"{s['bpp']:.4f} bpp, {s['kbps']:.1f} kbit/s"), text
    assert "complete" in lines[bar + 2] and f"dropped {s['dropped']}" in lines[bar + 2]
    # every log line is above the panel, whole, and none is glued onto a panel row
    done_line = next(i for i, ln in enumerate(lines) if "stream synthetic done" in ln)
    assert done_line < bar
    assert not any("INFO" in ln for ln in lines[bar:]), text
    assert not any("━" in ln for ln in lines[:bar]), text

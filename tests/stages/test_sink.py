"""The sink alone, fed over its real PULL socket: order restored, duplicates dropped, bytes and
frames counted; the live stats line; the Prometheus exporter scraped over HTTP during a run."""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pytest
import zmq

from codecflow.codecs.registry import create_codec
from codecflow.data import Frame, StreamInfo, Unit
from codecflow.pipeline import protocol
from codecflow.pipeline.config import from_dict
from codecflow.pipeline.stage import StopFlag
from codecflow.stages.sink_stage import Sink
from codecflow.stages.sinks.stats import PSNR_KEYS, StreamStats
from codecflow.stages.sinks.terminal import TerminalStats
from tests.conftest import ROOT


@pytest.fixture
def sink(tmp_path):
    cfg = from_dict({"source": {"type": "synthetic_video", "width": 16, "height": 16},
                     "codec": {"name": "jpeg"}, "output": {"dir": str(tmp_path / "out")},
                     "stats": {"terminal": "off"}})
    ep = {"dispatch": f"ipc://{tmp_path}/d", "sink": f"ipc://{tmp_path}/s"}
    ctx = zmq.Context()  # the test's own sockets: Sink.finish() terminates the shared one
    acks = ctx.socket(zmq.ROUTER)
    acks.bind(ep["dispatch"])
    s = Sink(cfg, ep, StopFlag(watch_parent=False))
    push = ctx.socket(zmq.PUSH)
    push.connect(ep["sink"])
    yield s, push, tmp_path / "out"
    push.close(linger=0)
    acks.close(linger=0)
    ctx.term()


INFO = StreamInfo(16, 16, pix_fmt="rgb24", unit_kind="frame")


def coded_msg(seq, index):
    frame = Frame.rgb(np.full((16, 16, 3), 10 * index, np.uint8))
    codec = create_codec("jpeg", q=30)
    coded = codec.encode(Unit("frame", seq, "s", [frame], INFO, first_frame=index, index=index))
    return protocol.coded_to_msg(coded, {"metrics": [], "encode_s": 0.01,
                                         "codec": codec.header()}, True)


def feed(s, push, msgs):
    for m in msgs:
        push.send_multipart(m)
    got = 0
    while got < len(msgs) and s.pull.poll(1000):
        s._receive(s.pull.recv_multipart(copy=False), [])
        got += 1
    assert got == len(msgs)
    s._drain_in_order()


def test_out_of_order_units_are_written_in_order_and_duplicates_dropped(sink):
    s, push, out = sink
    start = protocol.control("stream", seq=0, stream="s", info=INFO.to_dict(), total=3, meta={})
    units = {i: coded_msg(i + 1, i) for i in range(3)}
    feed(s, push, [start, units[2], units[0]])
    assert s.next_seq == 2 and 3 in s.buffer  # unit 1 (seq 2) missing: seq 3 waits
    feed(s, push, [units[0], units[1]])  # a duplicate, then the gap
    assert s.duplicates == 1 and s.next_seq == 4
    feed(s, push, [protocol.control("eos", seq=4, stream="s", frames=3),
                   protocol.control("eos", final=True, seq=5)])
    assert s.final is not None
    s.finish()
    from codecflow.codecs.container import CflReader

    with CflReader(out / "s.cfl") as r:
        idx = [rec.frame_index for _, recs in r.units() for rec in recs]
        assert r.status.complete
    assert idx == [0, 1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duplicates_dropped"] == 1 and summary["streams"]["s"]["frames"] == 3
    assert summary["streams"]["s"]["bytes"] == (out / "s.cfl").stat().st_size


def test_reorder_buffer_is_bounded_and_bad_messages_counted(sink):
    """Far-future sequence numbers, units of streams that never started, malformed headers:
    dropped and counted, never buffered or written."""
    s, push, out = sink
    start = protocol.control("stream", seq=0, stream="s", info=INFO.to_dict(), total=1, meta={})
    far = coded_msg(protocol.REORDER_WINDOW + 1, 0)
    stray = coded_msg(2, 0)
    h = protocol.unpack_header(stray[0])
    h["stream"] = "never-started"
    stray = [protocol.pack_header(h), *stray[1:]]
    bad_kind = protocol.control("ready", worker="x", credit=1)
    feed(s, push, [start, far, bad_kind, [b"\x93garbage"], coded_msg(1, 0), stray])
    assert s.reject.count == 4 and list(s.buffer) == []
    assert s.next_seq == 3  # the stray unit took its place in order, and was not written
    feed(s, push, [protocol.control("eos", seq=3, stream="s", frames=1),
                   protocol.control("eos", final=True, seq=4)])
    s.finish()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["messages_rejected"] == 4 and summary["complete"]
    assert summary["streams"]["s"]["frames"] == 1


def test_a_stream_cut_before_its_units_is_not_complete_and_late_units_are_refused(sink):
    """A stop drops units already read: their stream ends with fewer frames written than it
    holds, so it is not complete, whatever the source read; a unit arriving after its stream
    ended does not reopen (and truncate) the finished file."""
    s, push, out = sink
    start = protocol.control("stream", seq=0, stream="s", info=INFO.to_dict(), total=2, meta={})
    feed(s, push, [start, coded_msg(1, 0), protocol.control("eos", seq=2, stream="s", frames=2)])
    late = coded_msg(3, 1)
    feed(s, push, [late, protocol.control("eos", final=True, seq=4)])
    assert s.reject.count == 1  # the late unit
    s.finish()
    summary = json.loads((out / "summary.json").read_text())
    st = summary["streams"]["s"]
    assert st["frames"] == 1 and not st["complete"] and not summary["complete"]
    assert st["incomplete_reason"] == "stopped at frame 1 of 2"
    from codecflow.codecs.container import CflReader

    with CflReader(out / "s.cfl") as r:
        assert [rec.frame_index for _, recs in r.units() for rec in recs] == [0]


def test_stream_stats_rates():
    st = StreamStats("s", {"width": 10, "height": 10, "views": 2, "fps": 25.0,
                           "pix_fmt": "rgb24", "unit_kind": "pair"}, 4, {})
    def rows(v):
        return [{k: v for k in PSNR_KEYS}] * 2

    st.add_unit(1, 100, rows(30.0), 0.1, 0.2)
    st.add_unit(1, 300, rows(40.0), 0.1, 0.2)
    s = st.summary()
    assert s["frames"] == 2 and s["bytes"] == 400
    assert s["bpp"] == pytest.approx(8 * 400 / (10 * 10 * 2 * 2))  # per view
    assert s["kbps"] == pytest.approx(8 * 400 * 25 / 2 / 1000)
    assert s["psnr_yuv"] == pytest.approx(35.0)


def test_terminal_line_holds_the_numbers(capsys):
    t = TerminalStats("line", 0.0)
    snap = {"stream": "cam0", "done": 5, "total": 10, "fps": 2.5, "kbps": 812.3, "bpp": 0.5,
            "psnr_yuv": 36.25, "psnr_rgb": None, "queue": 1, "inflight": 2, "workers": 2,
            "dropped": 3, "encode_ms": 0.25, "latency": 0.5}
    t.update(snap, force=True)
    line = capsys.readouterr().err
    for part in ("[cam0] 5/10 (50%)", "2.5 fps", "812.3 kbit/s", "PSNR-YUV 36.25", "RGB   -",
                 "dropped 3", "enc 250 ms/frame"):
        assert part in line, part


def _scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    return {k: float(v) for k, v in (ln.split() for ln in text.splitlines() if ln)}


def test_prometheus_metrics_rise_during_a_run(tmp_path):
    import subprocess
    import sys

    from codecflow.pipeline.transport import free_tcp_port

    port = free_tcp_port()
    p = subprocess.Popen([sys.executable, "-m", "codecflow.cli", "run",
                          str(ROOT / "configs/demo_video.yaml"), "--set",
                          f"output.dir={tmp_path}", "--set", "codec.name=jpeg", "--set",
                          "source.frames=400", "--set", "source.realtime=true", "--set",
                          "source.fps=50", "--set", f"stats.prometheus_port={port}",
                          "--set", "stats.terminal=off"], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and len(seen) < 2:
            try:
                m = _scrape(port)
            except OSError:
                time.sleep(0.2)
                continue
            if m.get("codecflow_done", 0) > 0 and (not seen or m["codecflow_done"]
                                                      > seen[-1]["codecflow_done"]):
                seen.append(m)
            time.sleep(0.5)
    finally:
        p.terminate()
        p.wait(timeout=60)
    assert len(seen) == 2, p.stderr.read()[-2000:]
    assert seen[1]["codecflow_done"] > seen[0]["codecflow_done"]
    assert {"codecflow_fps", "codecflow_kbps", "codecflow_queue"} <= set(seen[1])
    assert seen[1]["codecflow_kbps"] > 0


def test_never_writes_past_a_missing_unit(sink):
    """Units 0 and 2 arrive, 1 never does, then the final EOS: the file ends after unit 0
    (no end record), the summary says why."""
    s, push, out = sink
    start = protocol.control("stream", seq=0, stream="s", info=INFO.to_dict(), total=3, meta={})
    feed(s, push, [start, coded_msg(1, 0), coded_msg(3, 2),
                   protocol.control("eos", seq=4, stream="s", frames=3),
                   protocol.control("eos", final=True, seq=5)])
    s.finish()
    from codecflow.codecs.container import CflReader

    with CflReader(out / "s.cfl") as r:
        idx = [rec.frame_index for _, recs in r.units() for rec in recs]
        assert not r.status.complete
    assert idx == [0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["streams"]["s"]["complete"] is False
    assert "unit seq 2 never arrived" in summary["incomplete_reason"]
    assert summary["streams"]["s"]["frames"] == 1


def test_panel_rows_are_short_and_names_are_not_markup():
    from rich.console import Console
    from rich.text import Text

    snap = {"stream": "synthetic", "done": 5, "total": 10, "fps": 12.5, "kbps": 81234.5,
            "bpp": 0.5, "psnr_yuv": 36.25, "psnr_rgb": 31.5, "queue": 4, "inflight": 12,
            "workers": 8, "dropped": 1234, "encode_ms": 1.25, "latency": 12.5}
    text = TerminalStats.panel_text(snap)
    console = Console(width=120, record=True, file=open("/dev/null", "w"))
    console.print(Text.from_markup(text))
    shown = console.export_text()
    assert "[synthetic]" in shown  # not swallowed as a markup tag
    assert "81234.5 kbit/s" in shown and "dropped 1234" in shown
    assert all(len(row.rstrip()) <= 80 for row in shown.splitlines()), shown

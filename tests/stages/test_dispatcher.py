"""The dispatcher (source stage) alone, with real ZeroMQ sockets playing workers and sink:
credit, acknowledgements, re-sends after a silent worker or a unit lost on the way (to the
worker or to the sink), reconnected workers, and workers that join after the end."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from codecflow.data import Frame, StreamInfo
from codecflow.pipeline import protocol
from codecflow.pipeline.config import from_dict
from codecflow.pipeline.stage import StopFlag
from codecflow.stages.source_stage import Dispatcher


@pytest.fixture
def rig(tmp_path):
    cfg = from_dict({"source": {"type": "synthetic_video", "width": 16, "height": 16},
                     "codec": {"name": "jpeg"},
                     "heartbeat": {"interval": 0.05, "timeout": 0.3, "sink_timeout": 0.6}})
    ep = {"dispatch": f"ipc://{tmp_path}/d", "sink": f"ipc://{tmp_path}/s"}
    ctx = zmq.Context.instance()
    sink = ctx.socket(zmq.PULL)
    sink.bind(ep["sink"])
    d = Dispatcher(cfg, ep, StopFlag(watch_parent=False))
    sockets = [sink]

    def worker(wid: str, credit: int):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, wid.encode())
        s.connect(ep["dispatch"])
        s.send_multipart(protocol.control("ready", worker=wid, credit=credit))
        sockets.append(s)
        return s

    yield d, worker, sink
    for s in sockets:
        s.close(linger=0)
    d.router.close(linger=0)
    d.to_sink.close(linger=0)


def pump(d, until, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not until():
        if d.router.poll(20):
            d._handle(d.router.recv_multipart(copy=False))
    assert until(), "condition not reached"


def drain(d):
    """Handle everything that arrives until nothing has for 0.2 s."""
    while d.router.poll(200):
        d._handle(d.router.recv_multipart(copy=False))


def unit_item(i):
    info = StreamInfo(16, 16, pix_fmt="rgb24", unit_kind="frame")
    frame = Frame.rgb(np.full((16, 16, 3), i, np.uint8))
    return ("unit", "s", [frame], info, i, i, time.time(), {})


def received_seqs(sock):
    seqs = []
    while sock.poll(50):
        h = protocol.unpack_header(sock.recv_multipart()[0])
        seqs.append(h["seq"])
    return seqs


def worker_holding(d, worker, wid: str, credit: int, n: int):
    """A worker with ``credit`` that has been sent units 0..n-1 (and received them)."""
    s = worker(wid, credit)
    pump(d, lambda: d._has_credit())
    for i in range(n):
        d._take(unit_item(i))
    assert received_seqs(s) == list(range(n))
    return s


def test_units_go_only_where_there_is_credit(rig):
    d, worker, _ = rig
    w = worker("w1", 2)
    pump(d, lambda: d._has_credit())
    for i in range(3):
        d._take(unit_item(i))
    assert received_seqs(w) == [0, 1]
    assert list(d.resend) == [2] and set(d.inflight) == {0, 1, 2}  # waits for credit
    w.send_multipart(protocol.control("ready", worker="w1", credit=1))
    pump(d, lambda: d._has_credit())
    assert d._send_to_worker(d.resend.popleft())
    assert received_seqs(w) == [2]


def test_acknowledged_units_leave_the_in_flight_set(rig):
    d, worker, _ = rig
    worker("w1", 2)
    pump(d, lambda: d._has_credit())
    d._take(unit_item(0))
    d._take(unit_item(1))
    s = zmq.Context.instance().socket(zmq.DEALER)  # the sink acknowledges over a DEALER
    s.connect(d.router.getsockopt(zmq.LAST_ENDPOINT).decode())
    s.send_multipart(protocol.control("ack", seqs=[0]))
    pump(d, lambda: 0 not in d.inflight)
    assert set(d.inflight) == {1} and d.workers["w1"]["units"] == {1}
    s.close(linger=0)


def wait_listening(d, seconds):
    """The dispatcher's loop for a while: messages handled, silent workers looked for."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if d.router.poll(20):
            d._handle(d.router.recv_multipart(copy=False))
        d._reap_dead_workers()


def test_units_of_a_silent_worker_are_resent_to_another(rig):
    d, worker, _ = rig
    worker_holding(d, worker, "w1", 2, 2)
    w2 = worker("w2", 4)
    pump(d, lambda: "w2" in d.workers and d.workers["w2"]["credit"] > 0)
    end = time.monotonic() + 0.5  # past the heartbeat timeout: w1 sends nothing, w2 beats
    while time.monotonic() < end:
        w2.send_multipart(protocol.control("heartbeat", worker="w2"))
        wait_listening(d, 0.05)
    assert d.workers["w1"]["silent"] and not d.workers["w2"]["silent"]
    assert sorted(d.resend) == [0, 1] and d.resent == 2
    while d.resend:
        assert d._send_to_worker(d.resend.popleft())
    assert sorted(received_seqs(w2)) == [0, 1]


def test_a_silent_worker_that_speaks_again_keeps_its_credit(rig):
    d, worker, _ = rig
    w1 = worker_holding(d, worker, "w1", 2, 1)
    wait_listening(d, 0.5)  # silent: presumed dead, its unit goes back to the queue
    assert d.workers["w1"]["silent"] and not d._has_credit() and list(d.resend) == [0]
    w1.send_multipart(protocol.control("heartbeat", worker="w1"))  # only frozen: it is back
    pump(d, lambda: not d.workers["w1"]["silent"])
    assert d.workers["w1"]["credit"] == 1 and d._has_credit()  # the credit it had
    w1.send_multipart(protocol.control("ready", worker="w1", credit=1, done=0))
    pump(d, lambda: d.workers["w1"]["credit"] == 2)


def test_time_the_dispatcher_was_away_is_not_the_workers_silence(rig):
    d, worker, _ = rig
    w1 = worker("w1", 2)
    pump(d, lambda: d._has_credit())
    d._take(unit_item(0))
    d._reap_dead_workers()
    time.sleep(0.6)  # this process did not listen (frozen, starved): twice the timeout
    w1.send_multipart(protocol.control("heartbeat", worker="w1"))
    d._reap_dead_workers()  # before it read what arrived meanwhile
    assert not d.workers["w1"]["silent"] and not d.resend


def test_units_sent_before_a_finished_one_were_lost_on_the_way(rig):
    d, worker, _ = rig
    w1 = worker_holding(d, worker, "w1", 3, 3)
    # the worker finished 0 and 2 but never got 1 (a dropped connection loses what was on
    # its way); workers code their units in the order sent
    w1.send_multipart(protocol.control("ready", worker="w1", credit=1, done=0))
    w1.send_multipart(protocol.control("ready", worker="w1", credit=1, done=2))
    pump(d, lambda: list(d.resend) == [1])
    assert d.workers["w1"]["credit"] == 3 and d.resent == 1  # 1's credit came back too
    assert d._send_to_worker(d.resend.popleft()) and received_seqs(w1) == [1]
    assert d.workers["w1"]["credit"] == 2 and list(d.workers["w1"]["order"]) == [1]
    # the re-sent copy's answer gives its credit back once; a second answer for 1 (the first
    # copy arriving late after all) gives none
    w1.send_multipart(protocol.control("ready", worker="w1", credit=1, done=1))
    pump(d, lambda: d.workers["w1"]["credit"] == 3)
    w1.send_multipart(protocol.control("ready", worker="w1", credit=1, done=1))
    drain(d)
    assert d.workers["w1"]["credit"] == 3 and not d.workers["w1"]["order"]


def test_a_finished_unit_the_sink_never_acknowledged_is_resent(rig):
    d, worker, _ = rig
    w1 = worker_holding(d, worker, "w1", 2, 2)
    w1.send_multipart(protocol.control("ready", worker="w1", credit=1, done=0))
    w1.send_multipart(protocol.control("ready", worker="w1", credit=1, done=1))
    pump(d, lambda: not d.workers["w1"]["order"])
    ack = zmq.Context.instance().socket(zmq.DEALER)  # the sink got 0; 1 was lost on its way
    ack.connect(d.router.getsockopt(zmq.LAST_ENDPOINT).decode())
    ack.send_multipart(protocol.control("ack", seqs=[0]))
    pump(d, lambda: 0 not in d.inflight)
    d._resend_unacknowledged(time.monotonic())
    assert not d.resend  # finished just now: on its way to the sink
    assert "finished, not yet acknowledged by the sink: 1;" in d.state_text(time.monotonic())
    end = time.monotonic() + 0.8  # past heartbeat.sink_timeout; the worker keeps beating
    while time.monotonic() < end:
        w1.send_multipart(protocol.control("heartbeat", worker="w1", idle=True))
        wait_listening(d, 0.05)
        d._resend_unacknowledged(time.monotonic())
    assert list(d.resend) == [1] and d.resent == 1 and not d.workers["w1"]["silent"]
    assert d._send_to_worker(d.resend.popleft()) and received_seqs(w1) == [1]
    d._resend_unacknowledged(time.monotonic() + 10)  # being coded again: not finished
    assert not d.resend
    ack.send_multipart(protocol.control("ack", seqs=[1]))
    pump(d, lambda: not d.inflight)
    ack.close(linger=0)


def test_an_idle_worker_gets_again_what_never_reached_it(rig):
    d, worker, _ = rig
    w1 = worker_holding(d, worker, "w1", 2, 1)
    w1.send_multipart(protocol.control("heartbeat", worker="w1", idle=True))
    pump(d, lambda: d.workers["w1"]["seen"] > d.workers["w1"]["last_send"])
    assert not d.resend  # just sent: it may still be on its way
    time.sleep(0.4)  # past the heartbeat timeout, and the worker still says it holds nothing
    w1.send_multipart(protocol.control("heartbeat", worker="w1", idle=True))
    pump(d, lambda: list(d.resend) == [0])
    assert d.workers["w1"]["credit"] == 2


def test_a_reconnected_worker_is_routed_by_its_name(rig):
    d, worker, _ = rig
    old = worker("w1", 1)
    pump(d, lambda: d._has_credit())
    new = worker("w1", 1)  # the same worker on a new connection: it takes over the route
    pump(d, lambda: d.workers["w1"]["credit"] == 2)
    # what was still queued on the old connection arrives under a temporary identity (it
    # starts with a zero byte): such a message must not become the route
    stray = zmq.Context.instance().socket(zmq.DEALER)
    stray.connect(d.router.getsockopt(zmq.LAST_ENDPOINT).decode())
    stray.send_multipart(protocol.control("ready", worker="w1", credit=1))
    pump(d, lambda: d.workers["w1"]["credit"] == 3)
    assert d.workers["w1"]["ready"]
    d._take(unit_item(0))
    assert received_seqs(new) == [0] and received_seqs(old) == [] and received_seqs(stray) == []
    stray.close(linger=0)


def test_a_worker_joining_after_the_end_is_stopped(rig):
    d, worker, _ = rig
    d.final_acked = True  # the run is over
    late = worker("late", 1)
    d._await_final_ack()
    kinds = []
    while late.poll(100):
        kinds.append(protocol.unpack_header(late.recv_multipart()[0])["kind"])
    assert kinds == ["stop"]


def test_a_stalled_run_says_where_its_units_are(rig, caplog, monkeypatch):
    from codecflow.stages import source_stage

    d, worker, _ = rig
    w1 = worker_holding(d, worker, "w1", 2, 2)
    w1.send_multipart(protocol.control("heartbeat", worker="w1", coding=0, coding_s=41.5))
    pump(d, lambda: d.workers["w1"].get("coding") is not None)
    d._take(unit_item(2))  # no credit left: waits to be sent
    monkeypatch.setattr(source_stage, "STALL_REPORT", 0.2)
    caplog.set_level("INFO", "codecflow.source")
    caplog.clear()
    now = time.monotonic()
    d._report_stall(now)
    assert not caplog.records  # acknowledged recently (the start counts)
    d._report_stall(now + 1.0)
    (rec,) = caplog.records
    text = rec.getMessage()
    assert "no unit acknowledged for 1 s" in text
    assert "in flight: 0, 1, 2" in text and "to re-send: 2" in text
    assert "worker w1: heard" in text and "coding seq 0 for 42 s" in text
    assert "sent and unfinished 0, 1" in text and "not yet sent: 2" in text
    assert rec.levelname == "WARNING"  # unit 2 is nobody's yet
    d._report_stall(now + 1.1)
    assert len(caplog.records) == 1  # said again only STALL_REPORT later
    ack = zmq.Context.instance().socket(zmq.DEALER)
    ack.connect(d.router.getsockopt(zmq.LAST_ENDPOINT).decode())
    ack.send_multipart(protocol.control("ack", seqs=[1, 2]))
    pump(d, lambda: set(d.inflight) == {0})
    d._report_stall(now + 2.0)  # only unit 0 left, and w1 is coding it: a slow codec
    last = caplog.records[-1]
    assert len(caplog.records) == 2 and last.levelname == "INFO"
    assert "in flight: 0;" in last.getMessage()
    ack.close(linger=0)

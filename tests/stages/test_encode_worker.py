"""An encode worker started alone: it waits for a dispatcher that is not up yet, and stops on
its own once the dispatcher it was connected to is gone for longer than the heartbeat timeout."""

from __future__ import annotations

import subprocess
import sys
import time

import zmq

from codecflow.pipeline import protocol
from codecflow.pipeline.transport import free_tcp_port
from tests.conftest import ROOT


def test_worker_stops_when_its_dispatcher_is_gone(tmp_path):
    dport, sport = free_tcp_port(), free_tcp_port()
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    worker = subprocess.Popen(
        [sys.executable, "-m", "codecflow.cli", "stage", "encode", "--config",
         str(ROOT / "configs/demo_video.yaml"), "--set", "codec.name=jpeg",
         "--set", f"transport.dispatch=tcp://127.0.0.1:{dport}",
         "--set", f"transport.sink=tcp://127.0.0.1:{sport}",
         "--set", "heartbeat.interval=0.2", "--set", "heartbeat.timeout=1.0",
         "--set", "transport.auth=none",  # a plain test socket stands in for the dispatcher
         "--set", f"output.dir={tmp_path}", "--worker", "0"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.5)  # no dispatcher yet: the worker waits (it never connected)
        assert worker.poll() is None, worker.stderr.read()
        router.bind(f"tcp://127.0.0.1:{dport}")
        kinds = set()
        deadline = time.monotonic() + 20
        while "ready" not in kinds and time.monotonic() < deadline:
            if router.poll(200):
                kinds.add(protocol.unpack_header(router.recv_multipart()[1])["kind"])
        assert "ready" in kinds
        router.close(linger=0)  # the dispatcher dies
        t0 = time.monotonic()
        code = worker.wait(timeout=20)
        assert code == 0 and time.monotonic() - t0 < 15
        assert "dispatcher has been gone" in worker.stderr.read()
    finally:
        if worker.poll() is None:
            worker.kill()
        ctx.term()

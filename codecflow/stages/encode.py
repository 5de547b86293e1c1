"""The encode worker process: asks the dispatcher for units, encodes them, sends coded units
(records, the decoder's reconstruction when a recon sink wants it, PSNR, timings) to the sink.

This is one of the only processes that may import torch (through a learned codec).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import zmq

from codecflow.codecs import registry
from codecflow.codecs.metrics import frame_psnr
from codecflow.errors import CodecflowError
from codecflow.pipeline import protocol, transport
from codecflow.pipeline.stage import EXIT_FAILED, EXIT_OK, StopFlag
from codecflow.pipeline.wire_check import Rejections

log = logging.getLogger("codecflow.encode")


def resolve_device(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        import torch  # noqa: PLC0415 - only encode/decode stages import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def worker_threads(cfg) -> int:
    if cfg.codec.threads:
        return cfg.codec.threads
    return max(1, (os.cpu_count() or 1) // cfg.workers)


def make_codec(cfg):
    """The worker's codec, set up as its spec says (device, threads)."""
    spec = registry.spec(cfg.codec.name)
    params = dict(cfg.codec.params)
    device = resolve_device(cfg.codec.device) if spec.uses_device else "cpu"
    if spec.threads == "torch":
        import torch  # noqa: PLC0415 - only encode/decode stages import torch

        torch.set_num_threads(worker_threads(cfg))
    elif spec.threads == "param":
        params.setdefault("threads", worker_threads(cfg))
    return registry.create_codec(cfg.codec.name, q=cfg.codec.q, device=device, **params)


def unit_metrics(unit, coded) -> list:
    info = unit.info
    return [frame_psnr(src, rec, info.matrix, info.range)
            for src, rec in zip(unit.frames, coded.recon)]


class Heartbeat(threading.Thread):
    """Sends heartbeats on its own socket so a long encode does not look like a dead worker.
    ``idle`` (set by the main loop): the worker holds no unit and none was waiting at its last
    look, so a unit the dispatcher sent it long ago was lost on the way."""

    def __init__(self, ctx, endpoint: str, wid: str, heartbeat, security):
        super().__init__(daemon=True)
        self.ctx, self.endpoint, self.wid = ctx, endpoint, wid
        self.heartbeat = heartbeat
        self.security = security
        self.halt = threading.Event()
        self.idle = False
        self.coding: tuple | None = None  # (seq, time.monotonic() when its encode began)

    def run(self):
        s = transport.make_socket(self.ctx, zmq.DEALER, 100, f"{self.wid}-hb".encode())
        s.setsockopt(zmq.LINGER, 0)
        self.security.client(s)
        transport.watch_peer(s, self.heartbeat)
        s.connect(self.endpoint)
        while not self.halt.wait(self.heartbeat.interval):
            coding = self.coding
            extra = {"coding": coding[0], "coding_s": round(time.monotonic() - coding[1], 3)} \
                if coding else {}
            s.send_multipart(protocol.control("heartbeat", worker=self.wid, idle=self.idle,
                                              **extra))
        s.close()


class DispatcherWatch:
    """Follows the worker's connection to the dispatcher (a ZeroMQ socket monitor). Once it
    was connected and has stayed disconnected for longer than the heartbeat timeout, the
    dispatcher is gone (killed, or its host lost: ZMTP heartbeats detect a silent peer on tcp)
    and the worker stops on its own. A worker that has not connected yet keeps waiting: stages
    started alone may come up before the source."""

    def __init__(self, sock, timeout: float):
        self.sock, self.timeout = sock, float(timeout)
        self.mon = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.connected = False
        self.lost_at: float | None = None

    def gone(self) -> bool:
        from zmq.utils.monitor import recv_monitor_message  # noqa: PLC0415

        while self.mon.poll(0):
            ev = recv_monitor_message(self.mon)["event"]
            if ev == zmq.EVENT_CONNECTED:
                self.connected, self.lost_at = True, None
            elif ev == zmq.EVENT_DISCONNECTED and self.connected and self.lost_at is None:
                self.lost_at = time.monotonic()
        return self.lost_at is not None and time.monotonic() - self.lost_at > self.timeout

    def close(self) -> None:
        self.sock.disable_monitor()
        self.mon.close(linger=0)


def run_encode_stage(cfg, endpoints: dict, worker_index: int = 0) -> int:
    stop = StopFlag()
    wid = f"w{worker_index}-{os.getpid()}"
    codec = make_codec(cfg)
    ctx = zmq.Context.instance()
    security = transport.Security(cfg.transport, endpoints)
    dealer = transport.make_socket(ctx, zmq.DEALER, cfg.transport.hwm, wid.encode())
    security.client(dealer)
    transport.watch_peer(dealer, cfg.heartbeat)
    watch = DispatcherWatch(dealer, cfg.heartbeat.timeout)
    dealer.connect(endpoints["dispatch"])
    to_sink = transport.make_socket(ctx, zmq.PUSH, cfg.transport.hwm)
    security.client(to_sink)
    transport.watch_peer(to_sink, cfg.heartbeat)
    to_sink.connect(endpoints["sink"])
    hb = Heartbeat(ctx, endpoints["dispatch"], wid, cfg.heartbeat, security)
    hb.start()
    with_recon = cfg.output.recon
    codec_header = codec.header()
    dealer.send_multipart(protocol.control("ready", worker=wid, credit=cfg.prefetch))
    log.info("worker %s ready: codec %s q=%d (%s)", wid, codec.name, codec.q,
             getattr(codec, "device", "cpu"))
    code = EXIT_OK
    reject = Rejections(log, f"worker {wid}")
    try:
        while not stop.is_set():
            if not dealer.poll(200):
                hb.idle = True
                if watch.gone():
                    log.warning("worker %s: the dispatcher has been gone for more than %.1f s; "
                                "stopping", wid, cfg.heartbeat.timeout)
                    break
                continue
            hb.idle = False
            parts = dealer.recv_multipart(copy=False)
            h = None
            try:
                h = protocol.unpack_header(parts[0])
                if h["kind"] == "stop":
                    break
                if h["kind"] != "unit":
                    raise protocol.ProtocolError(f"a {h['kind']} message is not for a worker; "
                                                 f"dropped")
                unit = protocol.unit_from_msg(h, parts[1:])
            except protocol.ProtocolError as e:
                reject(e)
                if h is not None and h.get("kind") == "unit":  # the dispatcher's: cannot go on
                    dealer.send_multipart(protocol.control(
                        "error", worker=wid, seq=-1, message=f"unit message rejected: {e}"))
                    code = EXIT_FAILED
                    break
                continue
            t0 = time.perf_counter()
            hb.coding = (unit.seq, time.monotonic())
            try:
                coded = codec.encode(unit)
            except CodecflowError as e:
                dealer.send_multipart(protocol.control("error", worker=wid, seq=unit.seq,
                                                       message=str(e)[:4000]))
                code = EXIT_FAILED
                break
            t_enc = time.perf_counter() - t0
            hb.coding = None
            metrics = unit_metrics(unit, coded) if cfg.stats.psnr else []
            extra = {"codec": codec_header, "metrics": metrics, "encode_s": t_enc,
                     "worker": wid, "t_read": h.get("t_read", 0.0), "frames_n": len(unit.frames)}
            if "side_info" in coded.meta:  # learned-stereo-si: how each view was refined
                extra["side_info"] = coded.meta["side_info"]
            to_sink.send_multipart(protocol.coded_to_msg(coded, extra, with_recon), copy=False)
            dealer.send_multipart(protocol.control("ready", worker=wid, credit=1, done=unit.seq))
    except Exception as e:  # noqa: BLE001 - report, then exit non-zero
        log.exception("worker %s failed", wid)
        try:
            dealer.send_multipart(protocol.control("error", worker=wid, seq=-1,
                                                   message=f"{type(e).__name__}: {e}"[:4000]))
        except zmq.ZMQError:
            pass
        code = EXIT_FAILED
    finally:
        hb.halt.set()
        hb.join(timeout=2 * cfg.heartbeat.interval + 1)
        watch.close()
        dealer.close(linger=1000)
        to_sink.close(linger=10000)
        ctx.term()  # deliver what is still queued for the sink (bounded by linger)
    return code

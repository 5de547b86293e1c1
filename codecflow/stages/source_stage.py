"""The source process: a reader thread (source -> units -> UnitQueue) and the dispatcher.

Dispatcher protocol (docs/protocol.md): workers connect a DEALER to the ``dispatch`` ROUTER and
send ``ready`` (credit), ``heartbeat`` and ``error``; the sink sends ``ack`` for every coded unit
it receives. A unit stays in flight until acknowledged; if its worker misses heartbeats for
``heartbeat.timeout`` seconds the unit is re-sent to another worker. Stream EOS and the final
EOS are sent straight to the sink with their own sequence numbers, so they arrive in-band.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time

import zmq

from codecflow.data import Unit, check_frame_size
from codecflow.errors import CodecflowError
from codecflow.pipeline import protocol, transport
from codecflow.pipeline.stage import EXIT_FAILED, EXIT_OK, StopFlag
from codecflow.pipeline.wire_check import Rejections
from codecflow.stages.framing import frame_groups, stream_info_for
from codecflow.pipeline.sources import source_class
from codecflow.stages.unit_queue import UnitQueue

log = logging.getLogger("codecflow.source")

FINAL_ACK_TIMEOUT = 120.0
LISTEN_GAP = 0.25  # seconds between two looks at the workers beyond which this process was away
RETRY_UNREACHABLE = 0.1  # seconds before sending again to a worker that was not connected
MAX_CREDIT = 64  # units a worker may hold at once, whatever credit it announces
STALL_REPORT = 30.0  # seconds without an acknowledged unit before the dispatcher says why


def reader(source, cfg, q: UnitQueue, stop: StopFlag, counters: dict) -> None:
    """Thread: read the source, group frames into units, feed the queue."""
    units = 0
    try:
        for stream in source.streams():
            check_frame_size(stream.info.width, stream.info.height, f"stream {stream.name}")
            info = stream_info_for(stream.info, cfg.unit_kind, cfg.codec.gop)
            counters["streams"].append({"stream": stream.name, "total": stream.total,
                                        "meta": stream.meta})
            q.put(("start", stream.name, info, stream.total, stream.meta))
            frames_in_stream = 0
            for frames, first, index in frame_groups(stream.frames, cfg.unit_kind, cfg.codec.gop):
                counters["frames_read"] += len(frames) // (2 if cfg.unit_kind == "pair" else 1)
                frames_in_stream = first + (1 if cfg.unit_kind == "pair" else len(frames))
                item = ("unit", stream.name, frames, info, first, index, time.time(),
                        dict(stream.meta))
                q.note_capture_drops(stream.name, stream.meta.get("dropped", 0))
                if not q.put(item, stop.event):
                    break
                units += 1
                if stop.is_set() or (cfg.max_units and units >= cfg.max_units):
                    break
            q.note_capture_drops(stream.name, stream.meta.get("dropped", 0))
            q.put(("eos", stream.name, frames_in_stream))
            if stop.is_set() or (cfg.max_units and units >= cfg.max_units):
                break
    except CodecflowError as e:
        q.put(("error", str(e)))
        return
    except Exception as e:  # noqa: BLE001 - report any reader failure as a stage failure
        log.exception("source reader failed")
        q.put(("error", f"{type(e).__name__}: {e}"))
        return
    finally:
        source.close()
    q.put(("done",))


class Dispatcher:
    def __init__(self, cfg, endpoints: dict, stop: StopFlag):
        self.cfg = cfg
        self.stop = stop
        self.ctx = zmq.Context.instance()
        hwm = cfg.transport.hwm
        self.router = transport.make_socket(self.ctx, zmq.ROUTER, max(hwm, 1000))
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # a worker that reconnects (its link dropped when this process did not answer ZMTP
        # heartbeats) keeps its identity: its new connection takes over the route
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.security = transport.Security(cfg.transport, endpoints)
        self.security.server(self.ctx, self.router)
        transport.bind(self.router, endpoints["dispatch"], "dispatch")
        self.to_sink = transport.make_socket(self.ctx, zmq.PUSH, max(hwm, 1000))
        self.security.client(self.to_sink)
        transport.watch_peer(self.to_sink, cfg.heartbeat)
        self.to_sink.connect(endpoints["sink"])
        self.workers: dict[str, dict] = {}
        self.inflight: dict[int, dict] = {}
        self.resend: collections.deque = collections.deque()
        self.next_seq = 0
        self.error: str | None = None
        self.resent = 0
        self.final_acked = False
        self.reject = Rejections(log, "dispatch")
        self.last_reap = time.monotonic()
        self.back_at = -1e9  # when this process was last found to have been away
        self.progress_at = time.monotonic()  # the last acknowledgement (or the start)
        self.stall_said_at = 0.0

    # ------------------------------------------------------------------ worker bookkeeping
    def _worker(self, wid: str) -> dict:
        w = self.workers.get(wid)
        if w is None:
            # units: not yet acknowledged (re-sent if it dies); order: sent, not yet finished
            # or counted lost, in the order sent (a worker codes its units in that order)
            w = {"ready": False, "credit": 0, "seen": time.monotonic(), "units": set(),
                 "silent": False, "order": collections.deque(), "last_send": 0.0,
                 "retry_at": 0.0, "coding": None}
            self.workers[wid] = w
            log.info("worker %s joined", wid)
        elif w["silent"]:
            w["silent"] = False
            log.warning("worker %s is back after %.1f s of silence", wid,
                        time.monotonic() - w["seen"])
        return w

    def _handle(self, parts: list) -> None:
        """One multipart message from a worker or the sink: [identity, header]. (A worker is
        told apart by the name in its messages; its socket identity is that name.)"""
        try:
            if len(parts) != 2:
                raise protocol.ProtocolError(f"a message of {len(parts) - 1} parts; the "
                                             f"dispatcher takes one header; dropped")
            h = protocol.unpack_header(parts[1])
            kind = h["kind"]
            if kind not in ("ack", "ready", "heartbeat", "error"):
                raise protocol.ProtocolError(f"a {kind} message is not for the dispatcher; "
                                             f"dropped")
        except protocol.ProtocolError as e:
            self.reject(e)
            return
        if kind == "ack":
            if h.get("final"):
                self.final_acked = True
            for seq in h["seqs"]:
                entry = self.inflight.pop(seq, None)
                if entry is not None:
                    self.progress_at = time.monotonic()
                    w = self.workers.get(entry["worker"])
                    if w:
                        w["units"].discard(seq)
            return
        wid = h.get("worker", "?")
        w = self._worker(wid)
        w["seen"] = time.monotonic()
        if kind == "ready":
            # the route is the worker's name, its work socket's identity (not the identity a
            # message arrived under: what was still queued on an old connection comes under a
            # temporary one)
            w["ready"] = True
            if "done" in h and not self._finished(wid, w, h["done"]):
                return  # a unit already counted lost (its credit came back then) or unknown
            w["credit"] = min(w["credit"] + h["credit"], MAX_CREDIT)
        elif kind == "heartbeat":
            w["coding"] = (h["coding"], h.get("coding_s", 0.0)) if "coding" in h else None
            if h.get("idle"):
                self._check_idle(wid, w)
        elif kind == "error":
            seq = h.get("seq")
            self.error = (f"stage encode (worker {wid}) failed on unit seq {seq}: "
                          f"{h.get('message')}")
            log.error(self.error)

    def _finished(self, wid: str, w: dict, seq: int) -> bool:
        """Worker ``wid`` finished unit ``seq``. Units sent to it before that one and not
        finished never reached it (a dropped connection loses what was on its way) or their
        ``ready`` was lost. -> whether ``seq`` was still counted as sent to it (else its credit
        came back when it was counted lost: a late answer gives none)."""
        if seq not in w["order"]:
            return False
        lost = []
        while (first := w["order"].popleft()) != seq:
            lost.append(first)
        self._lost(wid, w, lost)
        entry = self.inflight.get(seq)
        if entry is not None and entry["worker"] == wid:
            entry["done_at"] = time.monotonic()  # on its way to the sink, acknowledged soon
        return True

    def _check_idle(self, wid: str, w: dict) -> None:
        """An idle worker holds nothing: what was sent to it longer than the heartbeat timeout
        ago and not finished was lost on the way. (Not just after this process was away:
        heartbeats queued meanwhile are older than what the worker did since.)"""
        now = time.monotonic()
        if w["order"] and now - w["last_send"] > self.cfg.heartbeat.timeout \
                and now > self.back_at + self.cfg.heartbeat.timeout:
            lost = list(w["order"])
            w["order"].clear()
            self._lost(wid, w, lost)

    def _lost(self, wid: str, w: dict, seqs: list) -> None:
        """Units ``seqs`` (in the order sent) will never come back from worker ``wid``: their
        credit returns, and each is re-sent (first in line) if it is still this worker's and
        the sink has not acknowledged it."""
        w["credit"] = min(w["credit"] + len(seqs), MAX_CREDIT)
        again = []
        for seq in seqs:
            w["units"].discard(seq)
            entry = self.inflight.get(seq)
            if entry is not None and entry["worker"] == wid and seq not in self.resend:
                again.append(seq)
        if again:
            log.warning("unit(s) seq %s never reached worker %s (or its answers were lost): "
                        "re-sending", ", ".join(map(str, again)), wid)
            self.resend.extendleft(reversed(again))
            self.resent += len(again)

    def _reap_dead_workers(self) -> None:
        """A worker silent for ``heartbeat.timeout`` is presumed dead: its units are re-sent to
        the others. Its entry (and credit) is kept: a worker that was only frozen or slow comes
        back with the credit it had, so the run never waits for credit that was forgotten.
        Time this process itself was not listening (frozen, or starved on a busy machine) is
        not the workers' silence."""
        now = time.monotonic()
        away = now - self.last_reap - LISTEN_GAP
        self.last_reap = now
        if away > 0:
            self.back_at = now
        for wid, w in self.workers.items():
            if away > 0:
                w["seen"] = min(w["seen"] + away, now)
            if w["silent"] or now - w["seen"] <= self.cfg.heartbeat.timeout:
                continue
            log.warning("worker %s silent for %.1fs: presumed dead; re-sending %d unit(s)",
                        wid, now - w["seen"], len(w["units"]))
            for seq in sorted(w["units"], reverse=True):
                if seq in self.inflight:
                    self.resend.appendleft(seq)
                    self.resent += 1
            w["units"].clear()
            w["silent"] = True

    def _resend_unacknowledged(self, now: float) -> None:
        """A unit its worker finished that the sink has not acknowledged ``sink_timeout``
        seconds later was lost on the way to the sink (a connection that dropped, or died
        silently, with the unit in it): re-sent. The sink drops what it already has."""
        late = [seq for seq, e in self.inflight.items() if "done_at" in e
                and now - e["done_at"] > self.cfg.heartbeat.sink_timeout
                and seq not in self.resend]
        if not late:
            return
        for seq in late:
            entry = self.inflight[seq]
            del entry["done_at"]
            w = self.workers.get(entry["worker"])
            if w:
                w["units"].discard(seq)
        log.warning("unit(s) seq %s finished by their workers but not acknowledged by the sink "
                    "after %.0f s (lost on the way to the sink): re-sending", _seqs(late),
                    self.cfg.heartbeat.sink_timeout)
        self.resend.extend(late)
        self.resent += len(late)

    def _send_to_worker(self, seq: int) -> bool:
        entry = self.inflight[seq]
        now = time.monotonic()
        for wid, w in self.workers.items():
            if self._can_take(w, now):
                try:
                    self.router.send_multipart([wid.encode(), *entry["msg"]], copy=False)
                except zmq.ZMQError:  # not connected now (ROUTER_MANDATORY): reconnecting
                    w["retry_at"] = now + RETRY_UNREACHABLE  # (or dead: then it goes silent)
                    continue
                w["credit"] -= 1
                w["units"].add(seq)
                w["order"].append(seq)
                w["last_send"] = entry["sent"] = time.monotonic()
                entry["worker"] = wid
                entry.pop("done_at", None)
                return True
        return False

    @staticmethod
    def _can_take(w: dict, now: float) -> bool:
        return w["credit"] > 0 and w["ready"] and not w["silent"] \
            and now >= w["retry_at"]

    def _has_credit(self) -> bool:
        now = time.monotonic()
        return any(self._can_take(w, now) for w in self.workers.values())

    def _window_open(self) -> bool:
        """A new sequence number stays within REORDER_WINDOW of the oldest unit the sink has
        not yet received, so the sink's reorder buffer is bounded (it drops anything further
        ahead)."""
        return not self.inflight or \
            self.next_seq + 1 < min(self.inflight) + protocol.REORDER_WINDOW

    # ------------------------------------------------------------------------- main loop
    def run(self, q: UnitQueue, counters: dict) -> int:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        source_done = False
        last_stats = 0.0
        drain_deadline = None
        while True:
            for _ in range(64):
                if not poller.poll(0):
                    break
                self._handle(self.router.recv_multipart(copy=False))
            if self.error:
                break
            self._reap_dead_workers()
            self._resend_unacknowledged(time.monotonic())
            # re-sends first, then new units while some worker has credit
            while self.resend and self._has_credit():
                seq = self.resend[0]
                if seq not in self.inflight or self._send_to_worker(seq):
                    self.resend.popleft()
                else:
                    break
            while not source_done and not self.resend and self._has_credit() \
                    and self._window_open():
                item = q.get_nowait()
                if item is None:
                    break
                source_done = self._take(item)
            if self.error:
                break
            now = time.monotonic()
            if now - last_stats >= self.cfg.stats.interval:
                last_stats = now
                self._send_stats(q, counters)
            if source_done and not self.inflight and not self.resend:
                break
            self._report_stall(now)
            if self.stop.is_set():
                q.close()
                if drain_deadline is None:
                    drain_deadline = now + max(10.0, 3 * self.cfg.heartbeat.timeout)
                    log.info("stopping: draining %d unit(s) in flight", len(self.inflight))
                if self.stop.hard.is_set() or now > drain_deadline:
                    log.warning("stop: %d unit(s) in flight abandoned", len(self.inflight))
                    break
                # drain what the reader already queued; the reader stops on its own
                while not source_done:
                    item = q.get_nowait()
                    if item is None:
                        break
                    if item[0] == "unit":
                        continue  # not yet sent: dropped by the stop
                    source_done = self._take(item)
            poller.poll(5 if (self._has_credit() and len(q)) else 20)
        self._send_stats(q, counters)
        final = {"final": True, "seq": self.next_seq}
        if self.error:
            final["error"] = self.error
        self.to_sink.send_multipart(protocol.control("eos", **final))
        self._stop_workers()
        self._await_final_ack()
        return EXIT_FAILED if self.error else EXIT_OK

    def _report_stall(self, now: float) -> None:
        """Units in flight and none acknowledged for STALL_REPORT seconds: say where each one
        is and what each worker last told, every STALL_REPORT seconds: a warning, unless every
        worker holding units is coding one (a slow codec on big units is normal)."""
        if not self.inflight or now - self.progress_at < STALL_REPORT \
                or now - self.stall_said_at < STALL_REPORT:
            return
        self.stall_said_at = now
        holders = {e["worker"] for e in self.inflight.values()}
        # every worker that holds units is coding one: a slow codec, said quietly; anything
        # else (units nobody codes) is what a stuck run looks like
        slow = None not in holders and all(
            not self.workers[w]["silent"] and self.workers[w]["coding"] for w in holders)
        log.log(logging.INFO if slow else logging.WARNING, "no unit acknowledged for %.0f s; %s",
                now - self.progress_at, self.state_text(now))

    def state_text(self, now: float) -> str:
        """Where the units in flight are and what each worker last told (for logs)."""
        held = collections.defaultdict(list)
        for seq, entry in sorted(self.inflight.items()):
            held[entry["worker"] or "nobody yet"].append(seq)
        parts = [f"in flight: {_seqs(sorted(self.inflight))}",
                 f"to re-send: {_seqs(list(self.resend))}",
                 "finished, not yet acknowledged by the sink: "
                 f"{_seqs(sorted(s for s, e in self.inflight.items() if 'done_at' in e))}"]
        for wid, w in self.workers.items():
            coding = w["coding"]
            doing = f"coding seq {coding[0]} for {coding[1]:.0f} s" if coding else "not coding"
            parts.append(f"worker {wid}: {'silent' if w['silent'] else 'heard'} "
                         f"{now - w['seen']:.1f} s ago, {doing}, credit {w['credit']}, "
                         f"sent and unfinished {_seqs(list(w['order']))}, "
                         f"in flight there {_seqs(held.get(wid, []))}")
        if held.get("nobody yet"):
            parts.append(f"not yet sent: {_seqs(held['nobody yet'])}")
        return "; ".join(parts)

    def _await_final_ack(self) -> None:
        """Wait until the sink has the final EOS. The sink may still be starting: messages to
        it are queued here until it binds, and would be lost if this process exited first."""
        # a stopped run's sink is up (or gone): no need to wait as for one still starting
        limit = 5.0 if self.stop.hard.is_set() else 15.0 if self.stop.is_set() \
            else FINAL_ACK_TIMEOUT
        deadline = time.monotonic() + limit
        grace = None  # after the ack: a little longer, to stop workers that join late
        while time.monotonic() < (grace or deadline):
            if self.final_acked and grace is None:
                grace = time.monotonic() + 3 * self.cfg.heartbeat.interval + 0.5
            if self.router.poll(100):
                known = set(self.workers)
                self._handle(self.router.recv_multipart(copy=False))
                for wid in set(self.workers) - known:  # joined after the end: stop it
                    self._stop_worker(wid)
        if not self.final_acked:
            log.warning("the sink did not acknowledge the end of the run within %.0f s", limit)

    def _take(self, item: tuple) -> bool:
        """Handle one item from the reader; True when the source is finished."""
        kind = item[0]
        if kind == "unit":
            _, stream, frames, info, first, index, t_read, meta = item
            seq = self.next_seq
            self.next_seq += 1
            unit = Unit(info.unit_kind, seq, stream, frames, info, first / max(info.fps, 1e-9),
                        first, index, meta)
            self.inflight[seq] = {"msg": protocol.unit_to_msg(unit, t_read), "worker": None,
                                  "sent": 0.0}
            if not self._send_to_worker(seq):
                self.resend.append(seq)
            return False
        if kind == "start":
            _, stream, info, total, meta = item
            seq = self.next_seq
            self.next_seq += 1
            self.to_sink.send_multipart(protocol.control(
                "stream", seq=seq, stream=stream, info=info.to_dict(), total=total, meta=meta))
            return False
        if kind == "eos":
            _, stream, frames = item
            seq = self.next_seq
            self.next_seq += 1
            self.to_sink.send_multipart(protocol.control("eos", seq=seq, stream=stream,
                                                         frames=frames))
            return False
        if kind == "error":
            self.error = f"stage source failed: {item[1]}"
            log.error(self.error)
            return True
        return True  # done

    def _send_stats(self, q: UnitQueue, counters: dict) -> None:
        self.to_sink.send_multipart(protocol.control(
            "stats", stage="source", queue=len(q), inflight=len(self.inflight),
            workers=sum(not w["silent"] for w in self.workers.values()),
            dropped_units=q.dropped_units,
            dropped_by_stream=q.drops_by_stream(),
            dropped_frames=q.dropped_frames, frames_read=counters["frames_read"],
            resent=self.resent))

    def _stop_workers(self) -> None:
        for wid in self.workers:
            self._stop_worker(wid)

    def _stop_worker(self, wid: str) -> None:
        w = self.workers[wid]
        w["credit"] = 0
        try:  # its work socket's identity is its name (known even if only heartbeats came)
            self.router.send_multipart([wid.encode(), *protocol.control("stop")])
        except zmq.ZMQError:  # not connected (yet): nothing to stop
            pass

    def close(self) -> None:
        self.router.close(linger=500)
        self.to_sink.close(linger=5000)
        self.security.close()
        self.ctx.term()  # flush what is still queued (bounded by the sockets' linger)


def _seqs(seqs: list, most: int = 12) -> str:
    if not seqs:
        return "none"
    shown = ", ".join(map(str, seqs[:most]))
    return shown + (f" ... ({len(seqs)})" if len(seqs) > most else "")


def run_source_stage(cfg, endpoints: dict) -> int:
    stop = StopFlag()
    cls = source_class(cfg.source_type)
    source = cls(cfg.source_config, cfg.mode)  # opens files/devices: fails before any output
    ready_fd = os.environ.pop("CODECFLOW_READY_FD", None)
    if ready_fd:  # tell the supervisor the input is open and valid
        os.write(int(ready_fd), b"1")
        os.close(int(ready_fd))
    q = UnitQueue(cfg.queue, live=cfg.mode == "live")
    counters = {"frames_read": 0, "streams": []}
    dispatcher = Dispatcher(cfg, endpoints, stop)
    t = threading.Thread(target=reader, args=(source, cfg, q, stop, counters), daemon=True)
    t.start()
    try:
        code = dispatcher.run(q, counters)
    finally:
        q.close()
        stop.event.set()
        dispatcher.close()
    return code

"""The sink process: receives coded units, restores order by sequence number, writes the .cfl
bitstream and the reconstruction, and keeps the stats (live display, JSON lines, summary.json).

Every coded unit is acknowledged to the dispatcher on receipt; duplicates (a unit re-sent after
its worker was presumed dead) are dropped by sequence number.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import zmq

from codecflow.data import StreamInfo
from codecflow.codecs.container import CflWriter, record_size, stream_header
from codecflow.pipeline import protocol, transport
from codecflow.pipeline.console import STATS_FD_ENV, StatsRelay
from codecflow.pipeline.web import prometheus_text
from codecflow.pipeline.stage import EXIT_FAILED, EXIT_OK, StopFlag
from codecflow.pipeline.wire_check import Rejections
from codecflow.stages.sinks.recon import ReconWriter
from codecflow.stages.sinks.stats import StreamStats, run_summary, write_json_atomic
from codecflow.stages.sinks.terminal import TerminalStats

log = logging.getLogger("codecflow.sink")


class Sink:
    def __init__(self, cfg, endpoints: dict, stop: StopFlag):
        self.cfg = cfg
        self.stop = stop
        self.out_dir = cfg.output.dir
        os.makedirs(self.out_dir, exist_ok=True)
        self.ctx = zmq.Context.instance()
        self.security = transport.Security(cfg.transport, endpoints)
        self.pull = transport.make_socket(self.ctx, zmq.PULL, max(cfg.transport.hwm, 1000))
        self.security.server(self.ctx, self.pull)
        transport.bind(self.pull, endpoints["sink"], "sink")
        self.acks = transport.make_socket(self.ctx, zmq.DEALER, 1000,
                                          f"sink-{os.getpid()}".encode())
        self.security.client(self.acks)
        transport.watch_peer(self.acks, cfg.heartbeat)
        self.acks.connect(endpoints["dispatch"])
        self.buffer: dict[int, tuple] = {}
        self.next_seq = 0
        self.streams: dict[str, StreamStats] = {}
        self.writers: dict[str, CflWriter] = {}
        self.recons: dict[str, ReconWriter] = {}
        self.current: str | None = None
        self.source_stats: dict = {}
        self.final: dict | None = None
        self.output_error: str | None = None
        self.duplicates = 0
        self.reject = Rejections(log, "sink")
        self.t0 = time.monotonic()
        self.jsonl = open(os.path.join(self.out_dir, "units.jsonl"), "w") if cfg.output.jsonl \
            else None
        relay = os.environ.pop(STATS_FD_ENV, None)  # the supervisor draws the live panel
        self.term = StatsRelay(int(relay), cfg.stats.interval) if relay else \
            TerminalStats(cfg.stats.terminal, cfg.stats.interval)
        self.prom = PrometheusExporter(cfg.stats.prometheus_port, self) \
            if cfg.stats.prometheus_port else None

    # --------------------------------------------------------------------------- receive
    def _receive(self, parts: list, acks: list) -> None:
        """One multipart message (header, buffers...), checked (`wire_check`): a malformed one,
        one of a kind the sink does not take, or one further ahead than the reorder window is
        dropped and counted."""
        try:
            h = protocol.unpack_header(parts[0])
            kind = h["kind"]
            if kind not in ("stats", "coded", "stream", "eos"):
                raise protocol.ProtocolError(f"a {kind} message is not for the sink; dropped")
            payload = protocol.coded_from_msg(h, parts[1:]) if kind == "coded" else None
        except protocol.ProtocolError as e:
            self.reject(e)
            return
        if kind == "stats":
            self.source_stats = h
            self._count_drops()
            return
        seq = h["seq"]
        if kind == "eos" and h.get("final"):
            self.final = h
            self.acks.send_multipart(protocol.control("ack", seqs=[], final=True))
            return
        if seq >= self.next_seq + protocol.REORDER_WINDOW:
            self.reject(f"{kind} message seq {seq} is more than {protocol.REORDER_WINDOW} ahead "
                        f"of the next one to write ({self.next_seq}); dropped")
            return
        if kind == "coded":
            acks.append(seq)
        if seq < self.next_seq or seq in self.buffer:
            self.duplicates += 1
            log.info("duplicate unit seq %d dropped", seq)
            return
        self.buffer[seq] = (h, payload)

    def _count_drops(self) -> None:
        """Live drops as the source counts them, per stream: each stream's count and the run's
        total (their sum) come from the same numbers."""
        per = self.source_stats.get("dropped_by_stream") or {}
        for name, st in self.streams.items():
            st.dropped = int(per.get(name, 0))

    def dropped_total(self) -> int:
        return sum((self.source_stats.get("dropped_by_stream") or {}).values())

    def _drain_in_order(self) -> None:
        """Write what is contiguous from `next_seq` on. Never past a missing unit: what comes
        after a gap waits (and is discarded at the end of the run, the stream then ends at
        its last contiguous unit, not complete). An output that cannot be written (a full
        disk, a folder gone) ends the run: every file keeps its whole units and frames."""
        if self.output_error:
            return
        try:
            self._drain()
        except OSError as e:
            where = f" {e.filename}" if getattr(e, "filename", None) else ""
            self.output_error = f"cannot write the output{where} in {self.out_dir}: " \
                                f"{e.strerror or e}"
            log.error("%s; stopping (what was written stays whole)", self.output_error)

    def _drain(self) -> None:
        while True:
            if self.next_seq not in self.buffer:
                return
            h, bufs = self.buffer.pop(self.next_seq)
            self.next_seq += 1
            kind = h["kind"]
            if kind == "stream":
                self._start_stream(h)
            elif kind == "eos":
                st = self.streams.get(h["stream"])
                self._count_drops()
                # frames written plus frames dropped live: fewer than the stream holds when a
                # stop cut it short (units read but not sent at a stop count as neither)
                short = st is not None and st.total is not None and \
                    st.frames + st.dropped < st.total
                # in order up to its end marker: the file is whole (end record), but a stream
                # cut by a stop before its last frame is not complete
                self._end_stream(h["stream"], complete=not short,
                                 reason=f"stopped at frame {st.frames + st.dropped} of "
                                        f"{st.total}" if short else None, whole=True)
            elif kind == "coded":
                st = self.streams.get(h["stream"])
                why = ("which never started" if st is None else
                       "which has ended" if st.t_end is not None else
                       "with another stream description" if h["info"] != st.info else None)
                if why:
                    self.reject(f"coded unit seq {h['seq']} of stream {h['stream']!r:.60}, "
                                f"{why}; dropped")
                    continue
                self._write_unit(h, bufs)

    # ----------------------------------------------------------------------------- streams
    def _start_stream(self, h: dict) -> None:
        name = h["stream"]
        if name in self.streams:
            raise RuntimeError(f"stream {name!r} appears twice in one run (duplicate file names?)")
        self.streams[name] = StreamStats(name, h["info"], h.get("total"), h.get("meta") or {})
        self._count_drops()
        self.current = name
        log.info("stream %s: %dx%d %s, %s views, %s frames", name, h["info"]["width"],
                 h["info"]["height"], h["info"]["pix_fmt"], h["info"]["views"],
                 h.get("total") or "?")

    def _open_outputs(self, name: str, h: dict) -> None:
        st = self.streams[name]
        info = StreamInfo(**h["info"])
        if self.cfg.output.bitstream:
            path = os.path.join(self.out_dir, f"{name}.cfl")
            self.writers[name] = CflWriter(path, stream_header(info, h["codec"], name))
            st.file = path
        if self.cfg.output.recon and h.get("recon"):
            self.recons[name] = ReconWriter(self.out_dir, name, info, self.cfg.output.recon_format,
                                            st.total)

    def _write_unit(self, h: dict, coded) -> None:
        name = h["stream"]
        st = self.streams[name]
        if name not in self.writers and name not in self.recons:
            self._open_outputs(name, h)
        views = int(h["info"]["views"])
        nbytes = 0
        # the unit goes into every output whole, or into none
        cfl, recon = self.writers.get(name), self.recons.get(name) if coded.recon else None
        marks = [(w, w.mark()) for w in (cfl, recon) if w is not None]
        try:
            nbytes = cfl.write_unit(coded.index, coded.records) if cfl else coded.payload_bytes
            if recon:
                recon.write(coded.first_frame, coded.recon, views)
        except OSError:
            for w, m in marks:
                try:
                    w.rollback(m)
                except OSError:
                    pass
            raise
        n_frames = len(coded.recon) // views if coded.recon else int(h.get("frames_n", 1)) // views
        latency = time.time() - h.get("t_read", time.time())
        view_bytes = [0] * views
        for rec in coded.records:
            if rec.view < views:
                view_bytes[rec.view] += record_size(rec)
        st.add_unit(n_frames, nbytes, h.get("metrics") or [], h.get("encode_s", 0.0), latency,
                    view_bytes)
        for status in h.get("side_info") or []:
            if status not in st.side_info:
                if status != "refined":
                    log.warning("stream %s unit %s: a view decodes without side information "
                                "(%s); later units like it are counted in the summary", name,
                                coded.index, status)
                st.side_info[status] = 0
            st.side_info[status] += 1
        if self.jsonl:
            row = {"stream": name, "seq": coded.seq, "unit": coded.index,
                   "first_frame": coded.first_frame, "frames": n_frames, "bytes": nbytes,
                   "bpp": 8.0 * nbytes / (st.pixels_per_frame * n_frames) if n_frames else 0.0,
                   "encode_s": h.get("encode_s"), "latency_s": latency, "worker": h.get("worker"),
                   "t": time.time()}
            rows = h.get("metrics") or []
            if rows:
                for k in rows[0]:
                    row[k] = sum(r[k] for r in rows) / len(rows)
            self.jsonl.write(json.dumps(row) + "\n")
            self.jsonl.flush()
        self._show()

    def _end_stream(self, name: str, complete: bool, reason: str | None = None,
                    whole: bool | None = None) -> None:
        """``whole``: the file holds every unit of the stream up to its end marker (an end
        record is written); by default, when ``complete``."""
        st = self.streams.get(name)
        if st is None or st.t_end is not None:
            return
        st.t_end = time.monotonic()
        failed = None
        w = self.writers.pop(name, None)
        if w is not None:
            try:
                if complete if whole is None else whole:
                    w.close(frames=st.frames)
                else:
                    w.abort()
            except OSError as e:  # the end record did not fit: the file keeps its whole units
                failed = f"cannot write the output {w.path}: {e.strerror or e}"
                w.abort()
            st.bytes = os.path.getsize(w.path)  # bytes actually written, end record included
        r = self.recons.pop(name, None)
        if r is not None:
            try:
                r.close()
            except OSError as e:
                failed = failed or f"cannot write the output in {self.out_dir}: {e.strerror or e}"
            st.recon_files = r.paths
        if failed:
            log.error("stream %s: %s", name, failed)
            self.output_error = self.output_error or failed
            complete, reason = False, failed
        st.complete, st.reason = complete, (None if complete else reason)
        self._show(force=True)
        s = st.summary()
        log.info("stream %s done: %d frames, %d bytes, %.4f bpp, %.1f kbit/s, PSNR-YUV %s, "
                 "PSNR-RGB %s", name, s["frames"], s["bytes"], s["bpp"], s["kbps"],
                 _db(s["psnr_yuv"]), _db(s["psnr_rgb"]))

    # ------------------------------------------------------------------------------ stats
    def snapshot(self) -> dict:
        name = self.current
        st = self.streams.get(name) if name else None
        ss = self.source_stats
        base = {"stream": name or "-", "done": 0, "total": None, "fps": 0.0, "kbps": 0.0,
                "bpp": 0.0, "psnr_yuv": None, "psnr_rgb": None, "encode_ms": 0.0, "latency": 0.0,
                "queue": ss.get("queue", 0), "inflight": ss.get("inflight", 0),
                "workers": ss.get("workers", 0), "dropped": self.dropped_total()}
        base["codec"], base["n_workers"] = self.cfg.codec.name, self.cfg.workers
        # encode workers announce themselves once their codec (and its weights) is loaded
        base["state"] = "loading" if not ss.get("workers") and (st is None or st.frames == 0) \
            else "running"
        if st is not None:
            s = st.summary()
            base.update(done=st.frames, total=st.total, fps=s["fps"], kbps=s["kbps"],
                        bpp=s["bpp"], psnr_yuv=s["psnr_yuv"], psnr_rgb=s["psnr_rgb"],
                        encode_ms=s["encode_s_per_frame"], latency=s["latency_s_mean"])
        return base

    def _show(self, force: bool = False) -> None:
        self.term.update(self.snapshot(), force)

    # ------------------------------------------------------------------------------- run
    def run(self) -> int:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        stop_deadline = None
        self._show(force=True)  # "starting: loading ..." until the workers are up
        while True:
            acks: list = []
            if poller.poll(100):
                for _ in range(256):
                    try:
                        parts = self.pull.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._receive(parts, acks)
            if acks:
                self.acks.send_multipart(protocol.control("ack", seqs=acks))
            self._drain_in_order()
            if self.final is not None or self.output_error:
                break
            self._show()
            if self.stop.is_set():
                # the supervisor stops the source first; give the final EOS a moment to arrive
                stop_deadline = stop_deadline or time.monotonic() + 15.0
                if self.stop.hard.is_set() or time.monotonic() > stop_deadline:
                    log.warning("stopped before the final EOS arrived")
                    break
        return self.finish()

    def _gap_reason(self) -> str | None:
        expected = (self.final or {}).get("seq")
        if self.buffer or (expected is not None and self.next_seq < expected):
            return (f"unit seq {self.next_seq} never arrived: the stream ends at its last "
                    f"contiguous unit")
        return None

    def finish(self) -> int:
        error = self.output_error or (self.final or {}).get("error")
        why = (error or self._gap_reason() or
               (None if self.final is not None else "stopped before the end of the run"))
        if self.buffer:
            log.warning("%d unit(s) after a missing one discarded (never written past a gap)",
                        len(self.buffer))
            self.buffer.clear()
        for name in list(self.streams):
            self._end_stream(name, complete=False, reason=why or "stream end never arrived")
        error = error or self.output_error
        if self.jsonl:
            try:
                self.jsonl.close()
            except OSError as e:
                log.error("units.jsonl: %s", e)
        elapsed = time.monotonic() - self.t0
        self._count_drops()
        summary = run_summary(self.streams, elapsed, self.dropped_total(),
                              {"dropped_units": int(self.source_stats.get("dropped_units", 0)),
                               "resent_units": int(self.source_stats.get("resent", 0)),
                               "duplicates_dropped": self.duplicates,
                               "messages_rejected": self.reject.count,
                               "codec": {"name": self.cfg.codec.name, "q": self.cfg.codec.q},
                               "mode": self.cfg.mode, "workers": self.cfg.workers,
                               "complete": all(s.complete for s in self.streams.values())
                               and self.final is not None and not why,
                               "incomplete_reason": why or next(
                                   (s.reason for s in self.streams.values() if s.reason), None),
                               "error": error})
        self.term.final(summary)  # the last thing on screen is what summary.json says
        self.term.close()
        try:
            write_json_atomic(os.path.join(self.out_dir, "summary.json"), summary)
        except OSError as e:
            log.error("summary.json cannot be written in %s: %s", self.out_dir, e)
        if self.prom:
            self.prom.close()
        self.pull.close(linger=0)
        self.acks.close(linger=1000)
        self.security.close()
        self.ctx.term()
        return EXIT_FAILED if self.output_error else EXIT_OK


def _db(x) -> str:
    return "-" if x is None else f"{x:.2f} dB"


class PrometheusExporter:
    """Optional: serves the live stats as Prometheus text on 127.0.0.1:PORT/metrics."""

    def __init__(self, port: int, sink: Sink):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415

        outer = sink

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                body = prometheus_text(outer.snapshot()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def run_sink_stage(cfg, endpoints: dict) -> int:
    stop = StopFlag()
    sink = Sink(cfg, endpoints, stop)
    return sink.run()

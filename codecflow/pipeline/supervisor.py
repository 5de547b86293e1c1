"""The supervisor: starts every stage as its own OS process, watches them, and stops the
pipeline cleanly.

Start order: the source first (it opens files / devices and validates them; a bad input fails
here, before any output is written), then the sink and the encode workers. SIGINT/SIGTERM: the
source stops reading and drains what is in flight, the sink closes every file after the final
EOS; a second signal stops everything at once. A worker that dies is restarted (up to
``max_restarts``) and its units are re-sent by the dispatcher.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from codecflow.errors import ConfigError, PipelineError
from codecflow.pipeline.config import PipelineConfig, dump_config
from codecflow.pipeline.preflight import check_environment
from codecflow.pipeline.transport import Security, auth_mode, make_keys, resolve_endpoints

log = logging.getLogger("codecflow.supervisor")

SOURCE_OPEN_TIMEOUT = 120.0


class Stage:
    def __init__(self, name: str, argv: list, env: dict, pass_fds=(), console=None):
        self.name = name
        self.argv = argv
        self.env = env
        console = console if console is not None and console.owns_screen else None
        piped = {"stderr": subprocess.PIPE, "text": True, "errors": "replace"} if console else {}
        self.proc = subprocess.Popen(argv, env=env, start_new_session=True, pass_fds=pass_fds,
                                     **piped)
        if console is not None:
            console.watch(name, self.proc.stderr)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.proc.poll()
        return self.returncode

    def signal(self, sig) -> None:
        if self.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def describe_exit(self) -> str:
        rc = self.returncode
        if rc is None:
            return "running"
        if rc < 0:
            return f"killed by signal {signal.Signals(-rc).name}"
        return f"exit code {rc}"


class Supervisor:
    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.stages: dict[str, Stage] = {}
        self.restarts = 0
        self.signals = 0
        self.failed: list[str] = []
        # the live panel (this process owns the terminal: stage logs above the panel) and the
        # web view are drawn here, from the sink's relayed snapshots
        term = cfg.stats.terminal
        self.panel = term == "panel" or (term == "auto" and sys.stderr.isatty())
        self.console = None
        self._own_ipc_dir = cfg.transport.scheme == "ipc" and not cfg.transport.dir \
            and not cfg.transport.dispatch

    def _argv(self, stage: str, extra=()) -> list:
        return [sys.executable, "-m", "codecflow.cli", "stage", stage, "--config",
                self.config_path, *extra]

    def _env(self) -> dict:
        env = dict(os.environ)
        env["CODECFLOW_SUPERVISED"] = "1"
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _on_signal(self, signum, frame):
        self.signals += 1
        if self.signals == 1:
            log.info("%s: draining the pipeline (send again to stop at once)",
                     signal.Signals(signum).name)
            if "source" in self.stages:
                self.stages["source"].signal(signal.SIGTERM)
        else:
            for st in self.stages.values():
                st.signal(signal.SIGTERM if self.signals == 2 else signal.SIGKILL)

    def start_worker(self, i: int) -> None:
        self.stages[f"encode-{i}"] = Stage(f"encode-{i}", self._argv("encode", ["--worker",
                                                                               str(i)]),
                                           self._env(), console=self.console)

    def run(self) -> int:
        cfg = self.cfg
        check_environment(cfg)  # exit 2 before anything is written
        try:
            endpoints = resolve_endpoints(cfg.transport)
        except OSError as e:
            raise ConfigError(f"transport: cannot pick free ports on {cfg.transport.host}: "
                              f"{e.strerror or e}") from None
        # the stages' config (and this run's keys) in a folder only this user can read; the
        # output folder gets its pipeline.yaml once the source has opened its input
        self._private = tempfile.mkdtemp(prefix="cflow-run-")
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._start(endpoints)
        finally:
            for st in self.stages.values():
                st.signal(signal.SIGKILL)
            for s, h in old.items():
                signal.signal(s, h)
            if self._own_ipc_dir and cfg.transport.dir:
                shutil.rmtree(cfg.transport.dir, ignore_errors=True)
            shutil.rmtree(self._private, ignore_errors=True)
            if self.console is not None:
                self.console.close()

    def _start(self, endpoints: dict) -> int:
        cfg = self.cfg
        if auth_mode(cfg.transport, endpoints) == "curve" and not cfg.transport.keys:
            cfg.transport.keys = make_keys(os.path.join(self._private, "keys"))
        Security(cfg.transport, endpoints)  # the keys load (exit 2 before any stage starts)
        self.config_path = os.path.join(self._private, "pipeline.yaml")
        dump_config(cfg, self.config_path)
        log.info("pipeline %s: %s -> %s q=%d (%s units, %d worker(s), %s mode) -> %s",
                 cfg.name, cfg.source_type, cfg.codec.name, cfg.codec.q, cfg.unit_kind,
                 cfg.workers, cfg.mode, cfg.output.dir)
        log.debug("endpoints %s", endpoints)
        if self.panel or cfg.stats.http_port:
            from codecflow.pipeline.console import StatsView

            self.console = StatsView("panel" if self.panel else cfg.stats.terminal,
                                     cfg.stats.interval, cfg.stats.http_port, cfg.name)
            if cfg.stats.http_port:
                log.info("live web view: http://127.0.0.1:%d/", cfg.stats.http_port)
        return self._run()

    def _pump(self) -> None:
        if self.console is not None:
            self.console.pump()

    def _wait_source_open(self, rfd: int) -> bool:
        """The source writes one byte on the pipe once its input is open and valid."""
        deadline = time.monotonic() + SOURCE_OPEN_TIMEOUT
        src = self.stages["source"]
        while time.monotonic() < deadline:
            self._pump()
            r, _, _ = select.select([rfd], [], [], 0.1)
            if r:
                return os.read(rfd, 1) == b"1"
            if src.poll() is not None:
                return False
        return False

    def _run(self) -> int:
        cfg = self.cfg
        rfd, wfd = os.pipe()
        env = self._env()
        env["CODECFLOW_READY_FD"] = str(wfd)
        self.stages["source"] = Stage("source", self._argv("source"), env, pass_fds=(wfd,),
                                      console=self.console)
        os.close(wfd)
        opened = self._wait_source_open(rfd)
        os.close(rfd)
        if not opened:
            src = self.stages["source"]
            try:
                src.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                src.signal(signal.SIGKILL)
                src.proc.wait()
            src.poll()
            raise PipelineError(f"stage source failed before the pipeline started "
                                f"({src.describe_exit()}); nothing was written")
        os.makedirs(cfg.output.dir, exist_ok=True)
        shutil.copyfile(self.config_path, os.path.join(cfg.output.dir, "pipeline.yaml"))
        if self.console is not None:  # the sink's stats come to the panel drawn here
            self.stages["sink"] = Stage("sink", self._argv("sink"),
                                        self.console.sink_env(self._env()),
                                        pass_fds=(self.console.stats_w,), console=self.console)
            self.console.close_write_end()
        else:
            self.stages["sink"] = Stage("sink", self._argv("sink"), self._env())
        for i in range(cfg.workers):
            self.start_worker(i)
        return self._monitor()

    @staticmethod
    def _stop_source_now(source) -> float:
        """Two SIGTERMs: the source stops at once instead of draining (the second one may
        merge into the first on a busy machine: `_monitor` then kills it). -> the time."""
        source.signal(signal.SIGTERM)
        time.sleep(0.05)
        source.signal(signal.SIGTERM)
        return time.monotonic()

    def _monitor(self) -> int:
        cfg = self.cfg
        source, sink = self.stages["source"], self.stages["sink"]
        finish_deadline = None
        sink_failed = False
        hard_stop = None  # when the source was told to stop without draining
        while True:
            time.sleep(0.1)
            self._pump()
            for name, st in list(self.stages.items()):
                if not name.startswith("encode-") or st.poll() is None:
                    continue
                if source.poll() is not None or self.signals:
                    continue  # shutting down
                if st.returncode == 0 or any(name in f for f in self.failed):
                    continue
                if st.returncode in (2, 3):  # its codec/config failed: restarting cannot help
                    self.failed.append(f"{name} ({st.describe_exit()})")
                    log.error("%s failed (%s); stopping the pipeline", name, st.describe_exit())
                    hard_stop = hard_stop or self._stop_source_now(source)
                    continue
                if self.restarts < cfg.max_restarts:
                    self.restarts += 1
                    log.warning("%s died (%s); restarting it (%d/%d); its units are re-sent",
                                name, st.describe_exit(), self.restarts, cfg.max_restarts)
                    self.start_worker(int(name.split("-")[1]))
                else:
                    log.error("%s died (%s) and no restarts are left", name, st.describe_exit())
                    self.failed.append(f"{name} ({st.describe_exit()})")
                    alive = [s for n, s in self.stages.items()
                             if n.startswith("encode-") and s.poll() is None]
                    if not alive:  # nothing can code the units a drain would wait for
                        log.error("no encode worker left; stopping the pipeline")
                        hard_stop = hard_stop or self._stop_source_now(source)
            if sink.poll() not in (None, 0) and source.poll() is None and not sink_failed:
                sink_failed = True  # said once
                log.error("stage sink failed (%s); stopping", sink.describe_exit())
                hard_stop = hard_stop or self._stop_source_now(source)  # nothing can be written
            if hard_stop and source.poll() is None and time.monotonic() - hard_stop > 10:
                # the two signals merged into one (a busy machine) and the source drains,
                # waiting for units nobody will code or write: nothing is left to save
                log.error("stage source did not stop; killing it")
                source.signal(signal.SIGKILL)
                hard_stop = time.monotonic()
            if sink.poll() == 0 and source.poll() is None and finish_deadline is None:
                finish_deadline = time.monotonic() + 30.0  # source is closing its sockets
            if source.poll() is not None and sink.poll() is not None:
                break
            if source.poll() is not None and finish_deadline is None:
                finish_deadline = time.monotonic() + 60.0
            if finish_deadline and time.monotonic() > finish_deadline:
                late = sink if sink.poll() is None else source
                log.error("stage %s did not finish in time; stopping it", late.name)
                late.signal(signal.SIGTERM if late.poll() is None else signal.SIGKILL)
                finish_deadline = time.monotonic() + 30.0
        # stop the workers (the dispatcher already told them; this covers the rest)
        workers = [s for n, s in self.stages.items() if n.startswith("encode-")]
        deadline = time.monotonic() + 5.0
        while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        for w in workers:
            w.signal(signal.SIGTERM)
        for w in workers:
            try:
                w.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                w.signal(signal.SIGKILL)
        return self._exit_code()

    def _exit_code(self) -> int:
        source, sink = self.stages["source"], self.stages["sink"]
        bad = []
        if source.returncode != 0:
            bad.append(f"source ({source.describe_exit()})")
        if sink.returncode != 0:
            bad.append(f"sink ({sink.describe_exit()})")
        bad.extend(self.failed)
        if bad:
            log.error("pipeline failed: %s", ", ".join(bad))
            return 3
        log.info("pipeline finished: outputs in %s", self.cfg.output.dir)
        return 0

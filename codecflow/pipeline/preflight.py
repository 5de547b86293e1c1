"""Checks of the environment before a run writes anything: the output folder can be written,
tcp hosts resolve and ports are free, the Prometheus port is free. Each failure is a
ConfigError (exit 2) naming the key and the problem; nothing is written then (not even
pipeline.yaml)."""

from __future__ import annotations

import os
import socket
import tempfile
from urllib.parse import urlsplit

from codecflow.errors import ConfigError


def check_output_dir(path: str) -> None:
    """output.dir must be a folder this process can create and write files in."""
    p = os.path.abspath(path)
    if os.path.exists(p) and not os.path.isdir(p):
        raise ConfigError(f"output.dir: {path} exists and is not a folder")
    existing = p
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"output.dir: {path} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output.dir: {path} cannot be written: no write permission on "
                          f"{existing}")
    try:  # a read-only file system, a full disk: the permission bits do not tell
        fd, probe = tempfile.mkstemp(prefix=".cflow-probe-", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"output.dir: {path} cannot be written in {existing}: "
                          f"{e.strerror or e}") from None


def _resolve(host: str, key: str) -> None:
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"{key}: host {host!r} cannot be resolved: {e}") from None


def check_port_free(host: str, port: int, key: str) -> None:
    """Fails at once when ``host:port`` is taken (or not an address of this host)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                           socket.SOCK_STREAM) as s:
            s.bind((host, port))
    except OSError as e:
        raise ConfigError(f"{key}: cannot listen on {host}:{port}: {e.strerror or e}") from None


def check_transport(transport) -> None:
    """tcp: the host resolves; fixed ports to bind are free. Call before the endpoints are
    resolved (free ports are then picked on a host that resolves)."""
    if transport.dispatch or transport.sink:
        for key in ("dispatch", "sink"):
            ep = getattr(transport, key)
            if ep and ep.startswith("tcp://"):
                host = urlsplit(ep).hostname
                if host and host != "*":
                    _resolve(host, f"transport.{key}")
        return
    if transport.scheme != "tcp":
        return
    _resolve(transport.host, "transport.host")
    if transport.port:
        for port, what in ((transport.port, "dispatch"), (transport.port + 1, "sink")):
            check_port_free(transport.host, port, f"transport.port ({what} port {port})")


def check_environment(cfg) -> None:
    """Everything a run needs of its environment before it starts."""
    check_output_dir(cfg.output.dir)
    check_transport(cfg.transport)
    if cfg.stats.http_port and cfg.stats.http_port == cfg.stats.prometheus_port:
        raise ConfigError(f"stats.http_port and stats.prometheus_port are both "
                          f"{cfg.stats.http_port}; the web view serves /metrics too: set one")
    for key in ("prometheus_port", "http_port"):
        port = getattr(cfg.stats, key)
        if port:
            check_port_free("127.0.0.1", port, f"stats.{key}")

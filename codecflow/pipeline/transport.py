"""ZeroMQ endpoints and sockets.

Two endpoints per pipeline: ``dispatch`` (a ROUTER bound by the source's dispatcher: workers ask
for work there, send heartbeats, and the sink sends acknowledgements) and ``sink`` (a PULL bound
by the sink: coded units from workers, stream EOS and stats from the source).
"""

from __future__ import annotations

import os
import socket
import tempfile

import zmq

from codecflow.errors import ConfigError


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def resolve_endpoints(transport) -> dict:
    """Fill transport.dispatch / transport.sink from scheme/host/port/dir (in place)."""
    if transport.dispatch and transport.sink:
        return {"dispatch": transport.dispatch, "sink": transport.sink}
    if transport.scheme == "ipc":
        if not transport.dir:
            transport.dir = tempfile.mkdtemp(prefix="cflow-")
        os.makedirs(transport.dir, exist_ok=True)
        base = f"ipc://{os.path.abspath(transport.dir)}"
        if len(base) > 90:
            raise ConfigError(f"transport.dir: {transport.dir!r} is too long for ipc:// socket "
                              f"paths (limit ~100 characters); choose a shorter folder")
        transport.dispatch = transport.dispatch or f"{base}/dispatch.sock"
        transport.sink = transport.sink or f"{base}/sink.sock"
    else:
        port = transport.port or free_tcp_port(transport.host)
        sink_port = port + 1 if transport.port else free_tcp_port(transport.host)
        transport.port = port
        transport.dispatch = transport.dispatch or f"tcp://{transport.host}:{port}"
        transport.sink = transport.sink or f"tcp://{transport.host}:{sink_port}"
    return {"dispatch": transport.dispatch, "sink": transport.sink}


def make_socket(ctx: zmq.Context, kind: int, hwm: int, identity: bytes | None = None):
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 2000)
    s.setsockopt(zmq.SNDHWM, hwm)
    s.setsockopt(zmq.RCVHWM, hwm)
    if identity is not None:
        s.setsockopt(zmq.IDENTITY, identity)
    return s


def bind(sock, endpoint: str, what: str) -> None:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        raise ConfigError(f"transport: cannot bind the {what} endpoint {endpoint}: {e}") from None

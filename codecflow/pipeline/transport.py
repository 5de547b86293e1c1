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


def watch_peer(sock, heartbeat) -> None:
    """ZMTP heartbeats on a connecting socket (before ``connect``): a peer that answers none
    for ``heartbeat.timeout`` seconds (gone, or the connection died without a word, as tcp
    links across hosts can) drops the connection, and ZeroMQ connects again."""
    sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, int(1000 * heartbeat.interval)))
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, int(1000 * heartbeat.timeout)))


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


# ------------------------------------------------------------------------ authentication
KEY_NAMES = ("server", "client")


def auth_mode(transport, endpoints: dict) -> str:
    """'curve' or 'none': ``auto`` is curve as soon as an endpoint is tcp."""
    if transport.auth != "auto":
        return transport.auth
    return "curve" if any(str(e).startswith("tcp://") for e in endpoints.values()) else "none"


def make_keys(folder: str) -> str:
    """A fresh CURVE key set (server and client key pairs) in ``folder``, readable by its owner
    only. -> the folder."""
    import zmq.auth

    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    for name in KEY_NAMES:
        for path in (os.path.join(folder, f"{name}.key"),
                     os.path.join(folder, f"{name}.key_secret")):
            if os.path.exists(path):
                os.remove(path)
        _, secret = zmq.auth.create_certificates(folder, name)
        os.chmod(secret, 0o600)
    return folder


class Security:
    """The run's transport security, applied to every socket: with CURVE, sockets that bind are
    servers that accept only clients holding the run's client key (a ZAP handler per process),
    sockets that connect present that key; traffic is encrypted. With ``none``, nothing."""

    def __init__(self, transport, endpoints: dict):
        self.mode = auth_mode(transport, endpoints)
        self.keys = transport.keys
        self._auth = None
        if self.mode != "curve":
            return
        if not zmq.has("curve"):
            raise ConfigError("transport.auth: curve needs a libzmq built with CURVE "
                              "(libsodium); this one has none. Use ipc, or transport.auth: none "
                              "on a trusted network")
        if not self.keys:
            raise ConfigError("transport.auth: curve needs transport.keys, a folder holding "
                              "server.key_secret and client.key_secret (make one with "
                              "`codecflow keys DIR` and give every host a copy)")
        self.server_public, self.server_secret = self._load("server")
        self.client_public, self.client_secret = self._load("client")

    def _load(self, name: str) -> tuple:
        import zmq.auth

        path = os.path.join(self.keys, f"{name}.key_secret")
        if not os.path.isfile(path):
            raise ConfigError(f"transport.keys: {path} not found (make a key set with "
                              f"`codecflow keys {self.keys}`)")
        if os.stat(path).st_mode & 0o077:
            raise ConfigError(f"transport.keys: {path} is readable by other users; "
                              f"chmod 600 it")
        try:
            public, secret = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as e:
            raise ConfigError(f"transport.keys: {path} is not a CURVE key file: {e}") from None
        if not secret:
            raise ConfigError(f"transport.keys: {path} holds no secret key")
        return public, secret

    def server(self, ctx: zmq.Context, sock) -> None:
        """Before binding ``sock``."""
        if self.mode != "curve":
            return
        if self._auth is None:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(ctx, log=_quiet_auth_log())
            self._auth.start()
            self._auth.configure_curve_callback("*", _AllowOnly(self.client_public))
        sock.curve_secretkey = self.server_secret
        sock.curve_publickey = self.server_public
        sock.curve_server = True

    def client(self, sock) -> None:
        """Before connecting ``sock``."""
        if self.mode != "curve":
            return
        sock.curve_secretkey = self.client_secret
        sock.curve_publickey = self.client_public
        sock.curve_serverkey = self.server_public

    def close(self) -> None:
        """Before the context is terminated."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


class _AllowOnly:
    """ZAP credentials check: the run's client key, nothing else."""

    def __init__(self, key: bytes):
        self.key = key

    def callback(self, domain: str, key: bytes) -> bool:  # key: Z85 text, as self.key
        import hmac

        return hmac.compare_digest(bytes(key), bytes(self.key))


def _quiet_auth_log():
    import logging

    return logging.getLogger("codecflow.auth")

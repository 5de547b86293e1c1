"""transport.watch_peer over a real tcp link through a proxy that can make it die without a
word (it keeps both ends open and forwards nothing, as a link across hosts can): with ZMTP
heartbeats the connecting socket drops the dead connection and connects again; without them
everything sent later goes into the dead link."""

from __future__ import annotations

import select
import socket
import threading
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from codecflow.pipeline import transport
from codecflow.pipeline.config import HeartbeatConfig


class SilentLinkProxy(threading.Thread):
    """Forwards tcp connections to ``target_port``; `mute` makes the connections open at that
    moment swallow everything from then on (new connections are forwarded again)."""

    def __init__(self, target_port: int):
        super().__init__(daemon=True)
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.peer: dict[socket.socket, socket.socket] = {}
        self.muted: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.halt = threading.Event()

    def mute(self) -> None:
        with self.lock:
            self.muted |= set(self.peer)

    def run(self) -> None:
        while not self.halt.is_set():
            with self.lock:
                socks = [self.listener, *self.peer]
            ready, _, _ = select.select(socks, [], [], 0.02)
            for s in ready:
                if s is self.listener:
                    client, _ = s.accept()
                    server = socket.create_connection(("127.0.0.1", self.target))
                    with self.lock:
                        self.peer[client], self.peer[server] = server, client
                    continue
                data = s.recv(65536)
                with self.lock:
                    other = self.peer.get(s)
                    if not data:
                        for x in (s, other):
                            self.peer.pop(x, None)
                            x.close()
                    elif s not in self.muted:
                        other.sendall(data)
        for s in [self.listener, *self.peer]:
            s.close()


def send_across_a_link_that_dies(heartbeat: HeartbeatConfig | None) -> tuple[list, list]:
    """-> (messages the far end received, monitor events of the sending socket)."""
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    proxy = SilentLinkProxy(port)
    proxy.start()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    if heartbeat is not None:
        transport.watch_peer(push, heartbeat)
    mon = push.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    push.connect(f"tcp://127.0.0.1:{proxy.port}")
    got, events = [], []
    try:
        push.send(b"before")
        assert pull.poll(3000), "the link never worked"
        got.append(pull.recv())
        proxy.mute()  # the link dies without a word
        push.send(b"lost")
        time.sleep(1.0)
        push.send(b"after")
        while pull.poll(1500):
            got.append(pull.recv())
        while mon.poll(0):
            events.append(recv_monitor_message(mon)["event"])
    finally:
        proxy.halt.set()
        proxy.join(2)
        push.disable_monitor()
        for s in (mon, push, pull):
            s.close(linger=0)
    return got, events


def test_a_watched_link_that_dies_silently_is_made_again():
    got, events = send_across_a_link_that_dies(HeartbeatConfig(interval=0.05, timeout=0.3))
    assert got == [b"before", b"after"], got  # what was in the dead link is lost
    assert events.count(zmq.EVENT_CONNECTED) == 2 and zmq.EVENT_DISCONNECTED in events


def test_an_unwatched_link_that_dies_silently_stays_dead():
    got, events = send_across_a_link_that_dies(None)
    assert got == [b"before"], got
    assert events == [zmq.EVENT_CONNECTED]

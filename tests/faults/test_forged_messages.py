"""Foreign clients on the host against a real tcp pipeline (supervisor, source, workers and sink
as processes): forged end-of-run, injected coded units, a fake worker asking for frames, far
future sequence numbers and malformed headers. The output is checked frame by frame against
the source."""

import json
import threading
import time

import numpy as np
import pytest
import zmq

from codecflow.data import CodedUnit, Record, StreamInfo
from codecflow.pipeline import protocol
from codecflow.pipeline.transport import free_tcp_port
from tests.conftest import ROOT, moving_i420, run_cli, write_yuv

W, H, N = 96, 64, 60
CODEC = {"codec": "jpeg", "codec_version": "1", "weights": "", "q": 50}


def forged_coded(seq: int, stream: str = "clip_96x64_25") -> list:
    info = StreamInfo(W, H, "yuv420p", 1, 25.0, "frame", 1)
    coded = CodedUnit("frame", seq, stream, [Record(seq, 1, b"\xff\xd8forged", 0)], [], info,
                      seq, seq)
    return protocol.coded_to_msg(coded, {"codec": CODEC}, with_recon=False)


def malformed() -> list:
    """Headers a careless or hostile client might send: none may crash a stage."""
    ok = protocol.unpack_header(protocol.control("eos", seq=1, stream="x")[0])
    bad = []
    for patch in ({"seq": "abc"}, {"seq": -5}, {"stream": 7}, {"kind": "nope"},
                  {"frames": "many"}, {"seq": 2 ** 80}, {"stream": "../../etc/x"},
                  {"stream": "a\0b"}):
        h = dict(ok, **patch)
        try:
            bad.append([protocol.msgpack.packb(h, use_bin_type=True)])
        except (OverflowError, ValueError):
            pass
    bad.append([b"\xff\x00 not msgpack"])
    bad.append([protocol.msgpack.packb([1, 2, 3])])
    coded = forged_coded(3)
    h = protocol.unpack_header(coded[0])
    del h["info"]
    bad.append([protocol.pack_header(h), *coded[1:]])
    h = protocol.unpack_header(forged_coded(3)[0])
    h["records"][0]["view"] = "left"
    bad.append([protocol.pack_header(h), b"x"])
    h = protocol.unpack_header(forged_coded(3)[0])
    h["recon"] = [{"fmt": "yuv420p", "shapes": [[10 ** 5, 10 ** 5], [1, 1], [1, 1]]}]
    bad.append([protocol.pack_header(h), b"x"])
    return bad


class Attacker(threading.Thread):
    """Connects to the run's dispatch (port) and sink (port + 1) endpoints and sends forged
    messages until stopped. ``curve_server_key``: also try CURVE with a key pair of its own
    (the attacker read the server's public key).

    The sink listens only while the run goes (a fraction of a second here): the attacker
    retries its connections every 10 ms, not ZeroMQ's default 100-200 ms, so that it reaches
    the sink within that window; ``reached_sink`` says that it did (a TCP connection to the
    sink's port, whether or not its handshake then passed)."""

    def __init__(self, port: int, sink_msgs: list, dispatch_msgs: list, curve_server_key=None):
        super().__init__(daemon=True)
        self.port, self.sink_msgs, self.dispatch_msgs = port, sink_msgs, dispatch_msgs
        self.key = curve_server_key
        self.halt = threading.Event()
        self.sent = 0
        self.received = 0
        self.reached_sink = False

    def run(self):
        ctx = zmq.Context()
        socks, monitors = [], []
        for secure in (False, True) if self.key else (False,):
            sink = ctx.socket(zmq.PUSH)
            disp = ctx.socket(zmq.DEALER)
            disp.setsockopt(zmq.IDENTITY, b"w9-%d" % secure)
            for s in (sink, disp):
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.RECONNECT_IVL, 10)
                if secure:
                    pub, sec = zmq.curve_keypair()
                    s.curve_publickey, s.curve_secretkey = pub, sec
                    s.curve_serverkey = self.key
            monitors.append(sink.get_monitor_socket(zmq.EVENT_CONNECTED))
            sink.connect(f"tcp://127.0.0.1:{self.port + 1}")
            disp.connect(f"tcp://127.0.0.1:{self.port}")
            socks.append((sink, disp))
        while not self.halt.is_set():
            for sink, disp in socks:
                for sock, msgs in ((sink, self.sink_msgs), (disp, self.dispatch_msgs)):
                    for m in msgs:
                        try:
                            sock.send_multipart(m, zmq.NOBLOCK)
                            self.sent += 1
                        except zmq.Again:
                            pass
                while disp.poll(0):  # raw frames handed to the fake worker
                    disp.recv_multipart()
                    self.received += 1
            for mon in monitors:
                while mon.poll(0):
                    mon.recv_multipart()
                    self.reached_sink = True
            time.sleep(0.01)
        for s in [*monitors, *(s for pair in socks for s in pair)]:
            s.close()
        ctx.term()


def run_attacked(tmp_path, attacker_args: dict, sets=()) -> tuple:
    src = write_yuv(tmp_path / "clip_96x64_25.yuv", W, H, N)
    out = tmp_path / "out"
    port = free_tcp_port()
    attacker = Attacker(port, **attacker_args)
    attacker.start()
    try:
        p = run_cli("run", ROOT / "configs/yuv_batch.yaml", "--set", f"source.path={src}",
                    "--set", f"output.dir={out}", "--set", "codec.name=jpeg",
                    "--set", "codec.q=50", "--set", "transport.scheme=tcp",
                    "--set", f"transport.port={port}", "--set", "workers=2", *sets,
                    timeout=180)
    finally:
        attacker.halt.set()
        attacker.join(timeout=10)
    return p, src, out, attacker


def check_output_frame_by_frame(tmp_path, src, out) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    st = summary["streams"]["clip_96x64_25"]
    assert summary["complete"] and st["complete"] and st["frames"] == N, summary
    dec = tmp_path / "dec.yuv"
    p = run_cli("decode", out / "clip_96x64_25.cfl", "--output", dec, "--strict")
    assert p.returncode == 0, p.stderr
    frame_bytes = W * H * 3 // 2
    got = np.frombuffer(dec.read_bytes(), np.uint8)
    assert got.size == N * frame_bytes
    assert (out / "recon" / "clip_96x64_25.yuv").read_bytes() == dec.read_bytes()
    for t, (y, _, _) in enumerate(moving_i420(W, H, N)):
        dy = got[t * frame_bytes:t * frame_bytes + W * H].reshape(H, W).astype(np.float64)
        mse = np.mean((dy - y) ** 2)
        psnr = 10 * np.log10(255 ** 2 / max(mse, 1e-9))
        assert psnr > 30, f"frame {t}: PSNR-Y {psnr:.1f} dB against the source"
    return summary


def test_curve_shuts_out_foreign_clients_over_tcp(tmp_path):
    """tcp runs use CURVE by default: forged end-of-run, injected units and a fake worker get
    nowhere, with or without the server's public key."""
    ready = [protocol.control("ready", worker="w9", credit=50),
             protocol.control("error", worker="w9", seq=0, message="forged failure")]
    sink_msgs = [protocol.control("eos", final=True, seq=0),
                 *[forged_coded(s) for s in range(30)],
                 protocol.control("stats", dropped_frames=10 ** 6)]
    # the attacker has the server's public key too (as if it had read it): still refused
    keys = tmp_path / "k"
    run_cli("keys", keys, check=True)
    import zmq.auth

    server_pub, _ = zmq.auth.load_certificate(str(keys / "server.key_secret"))
    p, src, out, attacker = run_attacked(
        tmp_path, {"sink_msgs": sink_msgs, "dispatch_msgs": ready,
                   "curve_server_key": server_pub},
        sets=("--set", f"transport.keys={keys}"))
    assert p.returncode == 0, p.stderr
    assert attacker.reached_sink, "the attacker never reached the sink's port: nothing tested"
    assert attacker.received == 0, "a foreign client received frames"
    summary = check_output_frame_by_frame(tmp_path, src, out)
    assert summary["duplicates_dropped"] == 0
    assert "worker w9" not in p.stderr


def test_malformed_messages_are_dropped_not_fatal(tmp_path):
    """Without authentication (transport.auth: none), every received header is still checked:
    malformed ones and far-future sequence numbers are logged, counted and dropped; the run
    is whole."""
    disp_bad = [protocol.control("ready", worker="w9", credit="x"),
                protocol.control("ack", seqs="all"),
                protocol.control("heartbeat"),
                [b"only-one-part-after-identity", b"extra"],
                protocol.control("unit", seq=1)]
    p, src, out, attacker = run_attacked(
        tmp_path, {"sink_msgs": malformed() + [forged_coded(10 ** 12)],
                   "dispatch_msgs": disp_bad},
        sets=("--set", "transport.auth=none"))
    assert p.returncode == 0, p.stderr
    assert attacker.sent > 0
    assert attacker.reached_sink, "the attacker never reached the sink's port: nothing tested"
    summary = check_output_frame_by_frame(tmp_path, src, out)
    assert summary["messages_rejected"] > 0
    assert "Traceback" not in p.stderr
    assert "further rejected messages are counted, not logged" in p.stderr


@pytest.mark.parametrize("bad", malformed(), ids=lambda m: f"{len(m)}parts")
def test_each_malformed_message_is_a_protocol_error(bad):
    with pytest.raises(protocol.ProtocolError):
        h = protocol.unpack_header(bad[0])
        assert h["kind"] == "coded", h  # every other kind fails its header check
        protocol.coded_from_msg(h, bad[1:])

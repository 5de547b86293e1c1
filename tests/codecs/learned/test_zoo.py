"""compressai:<name> zoo codecs: offline failure, unknown names, payload round trip."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from codecflow.data import Frame, StreamInfo, Unit  # noqa: E402

from codecflow.codecs.registry import create_codec  # noqa: E402
from codecflow.codecs.decoding import decode_checked  # noqa: E402
from codecflow.errors import CodecError  # noqa: E402


def test_unknown_zoo_model_lists_names():
    with pytest.raises(CodecError, match="mbt2018-mean"):
        create_codec("compressai:no-such-model", q=10)


def test_offline_fails_fast_and_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached

    def no_dns(*a, **k):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    t0 = time.time()
    with pytest.raises(CodecError, match="need internet"):
        create_codec("compressai:mbt2018-mean", q=30)
    assert time.time() - t0 < 15


def test_q_maps_onto_quality_levels():
    from codecflow.codecs.learned.zoo import quality_for_q

    assert quality_for_q(0, 8) == 1 and quality_for_q(63, 8) == 8
    assert quality_for_q(63, 6) == 6
    assert [quality_for_q(q, 8) for q in range(64)] == sorted(quality_for_q(q, 8)
                                                              for q in range(64))


def test_roundtrip_with_untrained_zoo_model(monkeypatch):
    from compressai.zoo import image_models

    from codecflow.codecs.learned import zoo

    def fake(name, quality):
        torch.manual_seed(0)
        return image_models[name](quality=quality, metric="mse", pretrained=False)

    monkeypatch.setattr(zoo, "_load_zoo_model", fake)
    codec = create_codec("compressai:bmshj2018-factorized", q=63)
    assert codec.name == "compressai:bmshj2018-factorized" and codec.quality == 8
    info = StreamInfo(width=97, height=61, pix_fmt="rgb24")
    rgb = np.random.default_rng(0).integers(0, 255, (61, 97, 3), dtype=np.uint8)
    coded = codec.encode(Unit("frame", 0, "s", [Frame.rgb(rgb)], info))
    out = decode_checked(codec, coded.records, info, "frame")
    assert out[0].planes[0].shape == (61, 97, 3)
    payload = coded.records[0].payload
    with pytest.raises(CodecError):
        codec.decode_picture(payload[:-1], info)
    with pytest.raises(CodecError):
        codec.decode_picture(payload[:20] + bytes([payload[20] ^ 1]) + payload[21:], info)


def test_static_zoo_list_matches_compressai():
    from compressai.zoo.image import cfgs

    from codecflow.codecs.learned.zoo import ZOO_MODELS

    assert sorted(ZOO_MODELS) == sorted(cfgs)

"""Cross-device decoding check for the learned codecs: what one machine encodes, another must
decode to the same pixels (docs/codecs.md, "Exact decoding").

    python scripts/cross_device_check.py make   --out cases.msgpack            # inputs
    python scripts/cross_device_check.py encode --cases cases.msgpack --device cuda \
        --out coded_cuda.msgpack                                                # code them
    python scripts/cross_device_check.py decode --coded coded_cuda.msgpack --device cpu \
        --json result.json                                                      # check

`make` takes real pictures from ../shared/data when it is there (Kodak crops, stereo pairs,
frames of a raw video) and synthetic ones otherwise, so the encoding machine needs neither the
data nor PyAV. `encode` codes every case with learned-intra, learned-stereo and learned-video on
``--device`` and stores the records (payload, CRC-32 of the encoder's reconstruction) with the
SHA-256 of the reconstructed pictures. `decode` decodes every stored unit strictly on its own
``--device`` (a record whose decoded picture differs from the encoder's CRC-32 is an error),
compares the pictures' SHA-256 with the encoder's, prints a table and exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import msgpack
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codecflow.data import Record, StreamInfo, Unit  # noqa: E402

CODECS = {"pair": "learned-stereo", "gop": "learned-video", "frame": "learned-intra"}


def create_learned(name: str, q: int, device: str):
    """The codec class itself, not through the registry: that would import every codec module,
    PyAV's too, which a GPU machine that only runs learned codecs may lack."""
    from codecflow.codecs.learned.intra import LearnedIntra
    from codecflow.codecs.learned.stereo import LearnedStereo
    from codecflow.codecs.learned.video import LearnedVideo
    cls = {"learned-intra": LearnedIntra, "learned-stereo": LearnedStereo,
           "learned-video": LearnedVideo}[name]
    return cls(q=q, device=device)


def _array(a: np.ndarray) -> dict:
    return {"shape": list(a.shape), "data": np.ascontiguousarray(a, np.uint8).tobytes()}


def _unarray(d: dict) -> np.ndarray:
    return np.frombuffer(d["data"], np.uint8).reshape(d["shape"]).copy()


def _crop(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    y0, x0 = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
    return rgb[max(y0, 0):max(y0, 0) + h, max(x0, 0):max(x0, 0) + w]


def _synthetic(w: int, h: int, seed: int, shift: int = 0) -> np.ndarray:
    """A w x h crop, ``shift`` pixels from the left, of one of the training module's
    synthetic pictures (the pictures of a pair or a GOP: the same seed, other shifts)."""
    from codecflow.training.datasets import synthetic_images

    return np.ascontiguousarray(synthetic_images(1, max(w + 16, h), seed)[0][:h, shift:shift + w])


def make_cases(data: Path) -> list:
    import cv2

    cases = []
    kodak = sorted((data / "images" / "kodak").glob("*.png"))[:4]
    for p in kodak:
        rgb = cv2.imread(str(p), cv2.IMREAD_COLOR)[..., ::-1]
        cases.append({"kind": "frame", "name": p.stem, "pictures": [_crop(rgb, 512, 384)]})
    lefts = sorted((data / "stereo").rglob("*_L.png"))
    for p in lefts[:: max(1, len(lefts) // 3)][:3]:
        pair = [cv2.imread(str(p)[:-len(side)] + side, cv2.IMREAD_COLOR)[..., ::-1]
                for side in ("_L.png", "_R.png")]
        cases.append({"kind": "pair", "name": p.name[:-6],
                      "pictures": [_crop(v, 480, 320) for v in pair]})
    clips = sorted((data / "video").glob("*_*x*_*.yuv"))
    for p in clips[:1]:
        from codecflow.codecs import colour
        from codecflow.media import i420_frame_size, parse_yuv_name, split_i420
        w, h, _ = parse_yuv_name(p.name)
        size = i420_frame_size(w, h)
        raw = np.fromfile(p, np.uint8, count=size * 4)
        frames = [colour.to_rgb(split_i420(raw[i * size:(i + 1) * size], w, h))
                  for i in range(len(raw) // size)]
        cases.append({"kind": "gop", "name": p.stem, "pictures": frames})
    if not cases:
        cases.append({"kind": "frame", "name": "synthetic", "pictures": [_synthetic(200, 136, 1)]})
    if not any(c["kind"] == "pair" for c in cases):
        cases.append({"kind": "pair", "name": "synthetic_pair",
                      "pictures": [_synthetic(160, 96, 2), _synthetic(160, 96, 2, shift=5)]})
    if not any(c["kind"] == "gop" for c in cases):
        cases.append({"kind": "gop", "name": "synthetic_gop",
                      "pictures": [_synthetic(160, 96, 3, shift=2 * i) for i in range(4)]})
    return cases


def _info(kind: str, rgb: np.ndarray, n: int) -> StreamInfo:
    h, w = rgb.shape[:2]
    return StreamInfo(width=w, height=h, pix_fmt="yuv420p", views=2 if kind == "pair" else 1,
                      unit_kind=kind, gop=n if kind == "gop" else 1)


def _sha(frames: list) -> str:
    h = hashlib.sha256()
    for f in frames:
        for plane in f.planes:
            h.update(np.ascontiguousarray(plane).tobytes())
    return h.hexdigest()


def encode_cases(cases: list, device: str, q: int) -> dict:
    from codecflow.codecs import colour

    codecs, units = {}, []
    for case in cases:
        name = CODECS[case["kind"]]
        if name not in codecs:
            codecs[name] = create_learned(name, q, device)
        pictures = [_unarray(p) for p in case["pictures"]]
        info = _info(case["kind"], pictures[0], len(pictures))
        frames = [colour.rgb_to_i420(p, info.matrix, info.range) for p in pictures]
        t0 = time.perf_counter()
        coded = codecs[name].encode(Unit(case["kind"], 0, case["name"], frames, info))
        units.append({"name": case["name"], "codec": name, "info": info.to_dict(),
                      "weights": codecs[name].weights_id,
                      "encode_s": round(time.perf_counter() - t0, 3),
                      "records": [[r.frame_index, r.flags, r.payload, r.recon_crc, r.view,
                                   r.layer] for r in coded.records],
                      "recon_sha256": _sha(coded.recon)})
    return {"device": device, "q": q, "host": platform.node(), "units": units,
            "torch": __import__("torch").__version__}


def decode_units(coded: dict, device: str) -> list:
    from codecflow.codecs.decoding import decode_checked

    codecs, rows = {}, []
    for u in coded["units"]:
        if u["codec"] not in codecs:
            codecs[u["codec"]] = create_learned(u["codec"], coded["q"], device)
        codec = codecs[u["codec"]]
        info = StreamInfo(**u["info"])
        records = [Record(*r) for r in u["records"]]
        row = {"unit": u["name"], "codec": u["codec"], "encoded_on": coded["device"],
               "decoded_on": device, "bytes": sum(len(r.payload) for r in records)}
        if codec.weights_id != u["weights"]:
            row.update(ok=False, error=f"weights differ: {codec.weights_id} vs {u['weights']}")
        else:
            try:
                got = decode_checked(codec, records, info, strict=True, where=u["name"])
                row.update(ok=_sha(got) == u["recon_sha256"], error="")
                if not row["ok"]:
                    row["error"] = "decoded pictures differ from the encoder's"
            except Exception as e:  # a CRC mismatch or a refused payload: report, go on
                row.update(ok=False, error=f"{type(e).__name__}: {e}")
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="collect the input pictures")
    m.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    m.add_argument("--out", required=True)
    e = sub.add_parser("encode", help="code the inputs on --device")
    e.add_argument("--cases", required=True)
    e.add_argument("--device", default="cpu")
    e.add_argument("--q", type=int, default=40)
    e.add_argument("--out", required=True)
    d = sub.add_parser("decode", help="decode coded units on --device and compare")
    d.add_argument("--coded", required=True, nargs="+")
    d.add_argument("--device", default="cpu")
    d.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.cmd == "make":
        cases = make_cases(Path(a.data))
        for c in cases:
            c["pictures"] = [_array(x) for x in c["pictures"]]
        Path(a.out).write_bytes(msgpack.packb(cases))
        print(f"{len(cases)} cases -> {a.out}: "
              + ", ".join(f"{c['name']} ({c['kind']})" for c in cases))
        return 0
    if a.cmd == "encode":
        cases = msgpack.unpackb(Path(a.cases).read_bytes())
        coded = encode_cases(cases, a.device, a.q)
        Path(a.out).write_bytes(msgpack.packb(coded))
        for u in coded["units"]:
            print(f"encoded {u['name']:32s} {u['codec']:15s} on {a.device}: "
                  f"{sum(len(r[2]) for r in u['records'])} bytes, {u['encode_s']} s")
        return 0
    rows = []
    for path in a.coded:
        rows += decode_units(msgpack.unpackb(Path(path).read_bytes()), a.device)
    print(f"{'unit':32s} {'codec':15s} {'encoded':8s} {'decoded':8s} {'bytes':>7s}  result")
    for r in rows:
        print(f"{r['unit']:32s} {r['codec']:15s} {r['encoded_on']:8s} {r['decoded_on']:8s} "
              f"{r['bytes']:7d}  {'same pixels' if r['ok'] else 'MISMATCH ' + r['error']}")
    bad = sum(not r["ok"] for r in rows)
    print(f"{len(rows) - bad} of {len(rows)} units decode to the encoder's pictures")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "mismatches": bad}, indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Shipped weights: location, manifest, sha256 check, loading.

Weights live in ``weights/`` at the repository root (override the folder with the environment
variable ``CODECFLOW_WEIGHTS_DIR``, or a codec's ``weights`` parameter for one file). Next to
them ``manifest.json`` records, per codec, the file name, its sha256 and size, the architecture
and how it was trained. A weights file whose sha256 differs from the manifest is refused.

A weights file is a torch pickle ``{"format": "codecflow-weights", "format_version": 2,
"codec": ..., "architecture": {...}, "state_dict": {... fp16 tensors ...}, "tables": {...}}``.
``tables`` holds the integer coding tables (CompressAI's CDF tables, the scale table and the
per-q inverse gains), computed once at export: decoders load them instead of recomputing them
with float math that may differ in the last bit between machines. Files without tables
(format 1) still load; their tables are then rebuilt on the machine that loads them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from codecflow.errors import CodecError

MANIFEST = "manifest.json"
OVERSAMPLED_KEY = "learned-intra-2x"  # manifest key of learned-intra's oversampled-mode model
DEFAULT_FILES = {"learned-intra": "learned_intra.pt", OVERSAMPLED_KEY: "learned_intra_2x.pt",
                 "learned-stereo": "learned_stereo.pt",
                 "learned-video": "learned_video.pt",
                 "learned-stereo-si": "learned_stereo_si.pt"}
TRAIN_HINT = ("train one with `python -m codecflow.training.image --run-dir runs/intra` "
              "(or `codecflow train image`) and export it with "
              "`python -m codecflow.training.image --run-dir runs/intra --export "
              "weights/learned_intra.pt` (see docs/training.md)")
# buffers CompressAI rebuilds in update(); never shipped
CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def weights_dir() -> Path:
    env = os.environ.get("CODECFLOW_WEIGHTS_DIR")
    return Path(env) if env else repo_root() / "weights"


def default_path(codec: str = "learned-intra") -> Path:
    return weights_dir() / DEFAULT_FILES[codec]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: str | Path) -> dict:
    p = Path(folder) / MANIFEST
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise CodecError(f"weights manifest {p} is not valid JSON: {e}") from e


def write_manifest(folder: str | Path, manifest: dict) -> Path:
    p = Path(folder) / MANIFEST
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, p)
    return p


def manifest_entry(path: Path, codec: str) -> dict:
    """The manifest entry that describes weights file ``path`` (manifest next to the file)."""
    manifest = read_manifest(path.parent)
    entry = manifest.get(codec)
    if entry and entry.get("file") == path.name:
        return entry
    for e in manifest.values():
        if isinstance(e, dict) and e.get("file") == path.name:
            return e
    raise CodecError(f"weights file {path} is not listed in {path.parent / MANIFEST}; "
                     f"refusing unverified weights ({TRAIN_HINT})")


def verify(path: str | Path, codec: str = "learned-intra") -> str:
    """Check ``path`` exists and matches its manifest sha256 -> the sha256."""
    path = Path(path)
    if not path.is_file():
        raise CodecError(f"{codec}: weights file {path} not found; {TRAIN_HINT}")
    entry = manifest_entry(path, codec)
    expected = entry.get("sha256", "")
    actual = sha256_file(path)
    if actual != expected:
        raise CodecError(f"{codec}: weights file {path} has sha256 {actual}, but "
                         f"{path.parent / MANIFEST} expects {expected}; the file is corrupt or "
                         f"was replaced without updating the manifest")
    return actual


def strip_cdf_buffers(state_dict: dict) -> dict:
    return {k: v for k, v in state_dict.items()
            if not any(k.endswith(b) for b in CDF_BUFFERS)}


def load_state(path: str | Path) -> dict:
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds
        raise CodecError(f"cannot read weights file {path}: {e}") from e
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise CodecError(f"weights file {path} is not a codecflow weights file")
    return obj


# model class name (the "class" of a weights file's architecture) -> "module:builder"
MODEL_BUILDERS = {
    "IntraModel": "codecflow.codecs.learned.model:build_model",
    "ConditionalLatentCoder": "codecflow.codecs.learned.conditional:build_coder",
    "SideInfoRefiner": "codecflow.codecs.learned.side_info:build_refiner",
}


def build_from_architecture(arch: dict | None):
    """A model from its architecture map, by its "class" (IntraModel when absent)."""
    import importlib

    arch = dict(arch or {})
    name = arch.get("class", "IntraModel")
    if name not in MODEL_BUILDERS:
        raise CodecError(f"unknown model class {name!r} in a weights file; known: "
                         f"{', '.join(sorted(MODEL_BUILDERS))}")
    module, fn = MODEL_BUILDERS[name].split(":")
    return getattr(importlib.import_module(module), fn)(arch)


def load_model(path: str | Path, device: str = "cpu", codec: str = "learned-intra",
               verify_hash: bool = True):
    """Any shipped model: verify ``path`` against its manifest entry (one manifest may list
    several models), build it from its architecture, load the weights and coding tables.
    -> (model in eval mode on ``device``, sha256 of the file)."""
    import torch

    path = Path(path)
    sha = verify(path, codec) if verify_hash else sha256_file(path)
    obj = load_state(path)
    model = build_from_architecture(obj.get("architecture"))
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in strip_cdf_buffers(obj["state_dict"]).items()}
    missing, unexpected = nn_load(model, state)
    if missing or unexpected:
        raise CodecError(f"weights file {path} does not fit its model "
                         f"({type(model).__name__}): missing {missing[:5]}, unexpected "
                         f"{list(unexpected)[:5]}")
    model.eval()
    tables = obj.get("tables")
    if tables is not None:
        try:
            model.load_tables(tables)
        except (KeyError, ValueError, AttributeError) as e:
            raise CodecError(f"weights file {path} has unusable coding tables: {e}") from e
    elif hasattr(model, "build_tables"):  # older files: tables rebuilt here (float math)
        model.build_tables()
    return model.to(torch.device(device)), sha


def oversampled_path(path: str | Path) -> Path:
    """Where the model of learned-intra's oversampled mode lives next to its main model:
    ``NAME_2x.pt`` beside ``NAME.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_2x{path.suffix}")


def load_intra_model(path: str | Path | None = None, device: str = "cpu", verify_hash=True):
    """-> (IntraModel in eval mode with its coding tables, sha256 of the file).

    The model of the oversampled mode (`oversampled_path`, verified against the manifest like
    the main one) is attached as ``model.oversampled_model``, its sha256 as
    ``model.oversampled_sha``; both None when there is no such file (the oversampled mode
    then codes with the main model)."""
    path = Path(path) if path else default_path("learned-intra")
    model, sha = load_model(path, device, "learned-intra", verify_hash)
    model.oversampled_model, model.oversampled_sha = None, None
    twin = oversampled_path(path)
    if twin.is_file():
        model.oversampled_model, model.oversampled_sha = load_model(
            twin, device, OVERSAMPLED_KEY, verify_hash)
    return model, sha


def load_on_intra(path: str | Path, intra_sha: str, codec: str, device: str = "cpu"):
    """A model trained on top of learned-intra (a conditional coder, the side-information
    refiner): loaded as `load_model`, then checked against the intra weights in use (its
    architecture's ``base``). -> (model, sha256 of the file)."""
    model, sha = load_model(path, device, codec)
    base = (getattr(model, "base", None) or {}).get("sha256")
    if base and base != intra_sha:
        raise CodecError(f"{codec}: weights file {path} was trained on learned-intra weights "
                         f"{base[:12]}, but the intra weights loaded are {intra_sha[:12]}; pass "
                         f"the matching intra_weights or retrain (docs/training.md)")
    return model, sha


def nn_load(model, state: dict) -> tuple:
    """Plain nn.Module loading (CompressAI's override insists on CDF buffers, which live in the
    file's tables instead) -> (missing keys, unexpected keys), CDF buffers not counted."""
    import torch.nn as nn

    missing, unexpected = nn.Module.load_state_dict(model, state, strict=False)
    return [k for k in missing if not any(k.endswith(b) for b in CDF_BUFFERS)], unexpected


def save_weights(model, path: str | Path, training: dict | None = None,
                 codec: str = "learned-intra") -> dict:
    """Write ``model`` as an fp16 weights file and record it in the manifest next to it.

    Returns the manifest entry.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
          .contiguous() for k, v in strip_cdf_buffers(model.state_dict()).items()}
    arch = model.architecture()
    # coding tables are computed once here, so that every decoder uses the same integers
    # from the fp16 weights as shipped, so that the tables match what decoders load
    tables = None
    if hasattr(model, "build_tables"):
        shipped = build_from_architecture(arch)
        nn_load(shipped, {k: v.float() for k, v in sd.items()})
        shipped.build_tables()
        tables = {k: v.detach().cpu().contiguous() for k, v in shipped.coding_tables().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": "codecflow-weights", "format_version": 2 if tables else 1,
                "codec": codec, "architecture": arch, "state_dict": sd, "tables": tables}, tmp)
    os.replace(tmp, path)
    entry = {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
             "dtype": "float16", "architecture": arch, "training": training or {}}
    manifest = read_manifest(path.parent)
    manifest[codec] = entry
    write_manifest(path.parent, manifest)
    return entry


def add_tables(path: str | Path, codec: str = "learned-intra") -> dict:
    """Rewrite a format-1 weights file (no coding tables) as format 2: the same fp16 weights
    plus their coding tables; the manifest entry keeps its training record and notes the
    rewrite. Returns the new manifest entry."""
    import time

    path = Path(path)
    verify(path, codec)
    old = manifest_entry(path, codec)
    model, _ = load_intra_model(path, "cpu")
    training = dict(old.get("training", {}))
    training.setdefault("rewrites", []).append(
        {"what": "coding tables added (exact decoding); weights unchanged",
         "previous_sha256": old.get("sha256"), "date": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return save_weights(model, path, training, codec)

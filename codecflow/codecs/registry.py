"""The codec registry: every codec declares what it is once, beside its class.

    @register(CodecSpec("learned-intra", unit_kinds=("frame", "pair", "gop"), needs_torch=True,
                        uses_device=True, threads="torch"))
    class LearnedIntra(PictureCodec): ...

Config validation, the encode stage, `codecflow decode` and eval read only the spec; none of
them tests a codec's name. A codec's module is imported the first time its spec is asked for
(all of them only to list every codec); codec modules must not import torch at module level
(only encode and decode stages import torch, when they create a learned codec).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from codecflow.data import UNIT_KINDS
from codecflow.errors import CodecError

# The module that registers each codec (a name, or a prefix ending in ":"); a module registers
# its own specs when imported. Asking for one codec imports only its module, so a learned codec
# needs no PyAV and a classical one no torch (tests check this table against the specs).
CODEC_MODULES = {
    "x264": "codecflow.codecs.classical.pyav_codecs",
    "x265": "codecflow.codecs.classical.pyav_codecs",
    "x265-intra": "codecflow.codecs.classical.pyav_codecs",
    "jpeg": "codecflow.codecs.classical.opencv_codecs",
    "webp": "codecflow.codecs.classical.opencv_codecs",
    "learned-intra": "codecflow.codecs.learned.intra",
    "learned-stereo": "codecflow.codecs.learned.stereo",
    "learned-stereo-si": "codecflow.codecs.learned.stereo_si",
    "learned-video": "codecflow.codecs.learned.video",
    "compressai:": "codecflow.codecs.learned.zoo",
}


@dataclass(frozen=True)
class CodecSpec:
    """What a codec is. ``name`` is its registry name (with ``variants``: a prefix, the full
    name being ``name + variant``, as for ``compressai:<zoo model>``)."""

    name: str
    unit_kinds: tuple                # accepted unit kinds; the first is the default
    views: tuple = (1, 2)            # views per picture it codes: 1 = mono, 2 = stereo pairs
    layers: int = 1                  # layers per view and frame (base + enhancements)
    needs_torch: bool = False        # creating it imports torch (learned codecs)
    uses_device: bool = False        # runs on `codec.device` (cpu / cuda)
    threads: str = ""                # "torch": the worker sets torch's thread count;
    #                                  "param": the codec takes a `threads` parameter
    variants: tuple = ()             # for prefix names: the allowed suffixes
    cls: type | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not self.unit_kinds or not set(self.unit_kinds) <= set(UNIT_KINDS):
            raise ValueError(f"codec {self.name}: unit kinds {self.unit_kinds} not within "
                             f"{UNIT_KINDS}")

    def default_unit_kind(self, views: int) -> str:
        if views == 2:
            return "pair"
        return "frame" if "frame" in self.unit_kinds else self.unit_kinds[0]


_SPECS: dict[str, CodecSpec] = {}
_loaded = False


def register(spec: CodecSpec):
    """Class decorator: attach ``spec`` to the class and list it in the registry."""
    def deco(cls):
        full = CodecSpec(**{**spec.__dict__, "cls": cls})
        cls.spec = full
        if not spec.variants:
            cls.name = spec.name
        cls.unit_kinds = spec.unit_kinds
        _SPECS[spec.name] = full
        return cls
    return deco


def _load(name: str | None = None) -> None:
    """Import the module of codec ``name`` (a known name or prefix), or every codec module."""
    global _loaded
    if name is not None:
        for key, module in CODEC_MODULES.items():
            if name == key or (key.endswith(":") and name.startswith(key)):
                importlib.import_module(module)
                return
    if not _loaded:
        for module in dict.fromkeys(CODEC_MODULES.values()):
            importlib.import_module(module)
        _loaded = True


def codec_names() -> list[str]:
    _load()
    return sorted(n + "<model>" if s.variants else n for n, s in _SPECS.items())


def spec(name: str) -> CodecSpec:
    """The spec of codec ``name``; CodecError naming the known codecs otherwise."""
    _load(name)
    if name in _SPECS and not _SPECS[name].variants:
        return _SPECS[name]
    for prefix, s in _SPECS.items():
        if s.variants and name.startswith(prefix):
            if name[len(prefix):] not in s.variants:
                raise CodecError(f"unknown codec {name!r}: {prefix}<model> takes one of "
                                 f"{', '.join(s.variants)}")
            return s
    raise CodecError(f"unknown codec {name!r}; known codecs: {', '.join(codec_names())}")


def check_views(name: str, views: int, source: str = "the source") -> CodecSpec:
    """The spec, after checking the codec codes pictures of ``views`` views."""
    s = spec(name)
    if views not in s.views:
        what = {1: "one view (mono)", 2: "stereo pairs (two views)"}
        able = [n for n in codec_names() if views in _SPECS[n.replace("<model>", "")].views]
        raise CodecError(f"codec {name!r} codes {what[s.views[0]]} only, but {source} gives "
                         f"{what.get(views, f'{views} views')}; codecs for it: "
                         f"{', '.join(able)}")
    if views == 2 and "pair" not in s.unit_kinds:
        raise CodecError(f"codec {name!r} codes GOPs of one view and cannot code the stereo "
                         f"pairs {source} gives")
    return s


def create_codec(name: str, q: int = 32, device: str = "cpu", **params):
    """A codec instance, by registry name."""
    s = spec(name)
    if s.variants:
        return s.cls(name[len(s.name):], q=q, device=device, **params)
    return s.cls(q=q, device=device, **params)

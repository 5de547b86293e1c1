"""Pipeline config: YAML validated at load into typed sections.

Every key is checked: unknown keys, wrong types and values outside the allowed set raise a
ConfigError naming the key, what is allowed and what was given. `--set a.b=c` overrides are
applied before validation (values parsed as YAML scalars).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field

import yaml

from codecflow.codecs import registry
from codecflow.errors import CodecError, ConfigError
from codecflow.pipeline import schema
from codecflow.pipeline.schema import choice, number
from codecflow.pipeline.sources import source_class, source_views



@dataclass
class CodecConfig:
    name: str = "x264"
    q: int = number(32, 0, 63, help="quality 0..63: higher = better quality, more bytes")
    gop: int = number(8, 1, 4096, help="frames per GOP for GOP codecs (x264, x265)")
    device: str = choice("auto", ("auto", "cpu", "cuda"), help="learned codecs: where to run")
    threads: int = number(0, 0, 256, help="threads per encode worker (0 = cores / workers)")
    params: dict = field(default_factory=dict)


@dataclass
class HeartbeatConfig:
    interval: float = number(0.5, 0.05, 60.0, help="seconds between worker heartbeats")
    timeout: float = number(5.0, 0.2, 600.0, help="a worker silent this long is presumed dead")
    sink_timeout: float = number(30.0, 0.2, 3600.0, help="a unit a worker finished that the "
                                 "sink has not acknowledged this long after is re-sent")


@dataclass
class TransportConfig:
    scheme: str = choice("ipc", ("ipc", "tcp"))
    host: str = "127.0.0.1"
    port: int = number(0, 0, 65534, help="tcp: dispatch port (sink = port + 1); 0 = pick free")
    dir: str | None = None  # ipc: folder for socket files (default: a fresh temp folder)
    dispatch: str | None = None  # explicit endpoint (overrides scheme/host/port)
    sink: str | None = None
    hwm: int = number(8, 1, 100000, help="ZeroMQ high-water mark (messages) per socket")
    auth: str = choice("auto", ("auto", "curve", "none"),
                       help="curve: ZeroMQ CURVE, only holders of the run's keys may connect; "
                            "auto: curve on tcp, none on ipc (a private socket folder)")
    keys: str | None = None  # curve: folder with server.key_secret, client.key_secret
    #                          (default: fresh keys per run; `codecflow keys DIR` makes a set)


@dataclass
class OutputConfig:
    dir: str = "out"
    bitstream: bool = True
    recon: bool = True
    recon_format: str = choice("auto", ("auto", "yuv", "png"),
                               help="auto: .yuv for YUV/video sources, PNG for image sources")
    jsonl: bool = True


@dataclass
class StatsConfig:
    interval: float = number(1.0, 0.1, 60.0)
    terminal: str = choice("auto", ("auto", "panel", "line", "off"))
    psnr: bool = True
    prometheus_port: int | None = None
    http_port: int | None = number(None, 1, 65535, help="serve the live web view (plots, "
                                   "/stats.json, /metrics) on 127.0.0.1:PORT")


@dataclass
class PipelineConfig:
    source: dict
    mode: str = choice("offline", ("offline", "live"))
    codec: CodecConfig = field(default_factory=CodecConfig)
    workers: int = number(1, 1, 64)
    prefetch: int = number(2, 1, 16, help="units a worker may hold at once (2: code one while the next arrives)")
    queue: int = number(4, 1, 10000, help="units buffered in the source (live: drop oldest)")
    max_units: int | None = None
    max_restarts: int = number(3, 0, 1000, help="encode-worker restarts the supervisor allows")
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    name: str = "codecflow"

    # derived at load (not config keys)
    source_config: object = field(default=None, init=False, repr=False)

    @property
    def source_type(self) -> str:
        return self.source["type"]

    @property
    def views(self) -> int:
        return source_views(self.source_type)

    @property
    def unit_kind(self) -> str:
        return unit_kind_for(self.codec.name, self.views,
                             f"source.type {self.source_type!r}")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        return {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else copy.deepcopy(v))
                for k, v in d.items()}


def unit_kind_for(codec_name: str, views: int, source: str = "the source") -> str:
    """The unit kind the codec gets from a source of ``views`` views (ConfigError naming both
    when the codec cannot code that source)."""
    try:
        return registry.check_views(codec_name, views, source).default_unit_kind(views)
    except CodecError as e:
        raise ConfigError(f"codec.name: {e}") from None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = copy.deepcopy(data)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. codec.q=40")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: bad key {key!r}")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: cannot parse value: {e}") from None
        node = data
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a section")
            node = node[p]
        node[parts[-1]] = value
    return data


def read_yaml(path: str) -> dict:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path}: is a folder, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path}: cannot be read: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a map at the top level, got "
                          f"{type(data).__name__}")
    return data


def validate_source(source: dict):
    """Parse the source section with its type's Config; returns the typed config."""
    if not isinstance(source, dict):
        raise ConfigError(f"source: expected a map, got {source!r}")
    if "type" not in source:
        raise ConfigError("source.type: required key is missing")
    cls = source_class(source["type"])
    rest = {k: v for k, v in source.items() if k != "type"}
    return schema.parse(cls.Config, rest, "source")


def from_dict(data: dict, where: str = "") -> PipelineConfig:
    cfg = schema.parse(PipelineConfig, data, where)
    try:
        registry.spec(cfg.codec.name)
    except CodecError as e:
        raise ConfigError(f"codec.name: {e}") from None
    cfg.unit_kind  # raises if the codec cannot code this source's units
    cfg.source_config = validate_source(cfg.source)
    return cfg


def load_config(path: str, overrides: list[str] | None = None) -> PipelineConfig:
    data = apply_overrides(read_yaml(path), overrides or [])
    try:
        return from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def dump_config(cfg: PipelineConfig, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    os.replace(tmp, path)

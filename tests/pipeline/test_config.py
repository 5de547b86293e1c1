import pytest

from codecflow.errors import ConfigError
from codecflow.pipeline.config import apply_overrides, from_dict, load_config
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_parse(path):
    cfg = load_config(str(path), ["output.dir=/tmp/x"])
    assert cfg.output.dir == "/tmp/x"
    assert cfg.unit_kind in ("frame", "pair", "gop")


def test_required_config_set():
    names = {p.name for p in CONFIGS}
    assert {"demo_video.yaml", "demo_stereo.yaml", "camera.yaml", "stereo_cam.yaml",
            "yuv_batch.yaml", "images.yaml"} <= names


def base():
    return {"source": {"type": "synthetic_video", "width": 64, "height": 48, "frames": 4}}


def test_unknown_top_level_key_names_key():
    d = base()
    d["colour_space"] = "x"
    with pytest.raises(ConfigError, match="colour_space"):
        from_dict(d)


def test_unknown_nested_key_names_path():
    d = base()
    d["codec"] = {"name": "x264", "qq": 3}
    with pytest.raises(ConfigError, match=r"codec: unknown key\(s\) 'qq'"):
        from_dict(d)


def test_unknown_source_key():
    d = base()
    d["source"]["colour"] = 1
    with pytest.raises(ConfigError, match=r"source: unknown key\(s\) 'colour'"):
        from_dict(d)


def test_bad_choice_lists_allowed():
    d = base()
    d["mode"] = "fast"
    with pytest.raises(ConfigError, match="mode: must be one of offline, live; got 'fast'"):
        from_dict(d)


def test_q_range():
    d = base()
    d["codec"] = {"name": "jpeg", "q": 64}
    with pytest.raises(ConfigError, match="codec.q: must be <= 63"):
        from_dict(d)


def test_wrong_type():
    d = base()
    d["workers"] = "two"
    with pytest.raises(ConfigError, match="workers: expected an integer, got 'two'"):
        from_dict(d)


def test_unknown_codec_lists_codecs():
    d = base()
    d["codec"] = {"name": "h266"}
    with pytest.raises(ConfigError, match="codec.name: unknown codec 'h266'.*x264"):
        from_dict(d)


def test_unknown_source_type():
    d = base()
    d["source"]["type"] = "webcam"
    with pytest.raises(ConfigError, match="source.type: must be one of"):
        from_dict(d)


def test_gop_codec_rejects_stereo():
    d = {"source": {"type": "synthetic_stereo"}, "codec": {"name": "x264"}}
    with pytest.raises(ConfigError, match="'x264' codes one view.*'synthetic_stereo' gives "
                                          "stereo pairs.*learned-intra"):
        from_dict(d)


def test_pair_only_codec_rejects_mono_source():
    """A codec whose spec says it codes pairs only: a mono source is a config error naming
    both (the spec is registered for this test only)."""
    from codecflow.codecs import registry
    from codecflow.codecs.base import PictureCodec

    registry.spec("jpeg")  # load the real registry first
    try:
        @registry.register(registry.CodecSpec("pairs-only-test", unit_kinds=("pair",),
                                              views=(2,)))
        class PairsOnly(PictureCodec):
            pass

        assert from_dict({"source": {"type": "synthetic_stereo"},
                          "codec": {"name": "pairs-only-test"}}).unit_kind == "pair"
        with pytest.raises(ConfigError, match="'pairs-only-test' codes stereo pairs .* only, "
                                              "but source.type 'synthetic_video' gives one "
                                              "view"):
            from_dict({**base(), "codec": {"name": "pairs-only-test"}})
    finally:
        registry._SPECS.pop("pairs-only-test", None)


def test_unit_kinds():
    assert from_dict({**base(), "codec": {"name": "x264"}}).unit_kind == "gop"
    assert from_dict({**base(), "codec": {"name": "jpeg"}}).unit_kind == "frame"
    assert from_dict({"source": {"type": "synthetic_stereo"},
                      "codec": {"name": "jpeg"}}).unit_kind == "pair"


def test_overrides_parse_yaml_scalars():
    d = apply_overrides(base(), ["codec.q=40", "workers=2", "codec.name=x265",
                                 "output.recon=false"])
    cfg = from_dict(d)
    assert (cfg.codec.q, cfg.workers, cfg.codec.name, cfg.output.recon) == (40, 2, "x265", False)


def test_override_needs_equals():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(base(), ["codec.q"])


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.yaml")


def test_unknown_zoo_model_lists_available():
    d = base()
    d["codec"] = {"name": "compressai:nonexistent"}
    with pytest.raises(ConfigError, match="unknown codec .*compressai:<model> takes one of.*mbt2018-mean"):
        from_dict(d)


def test_learned_stereo_needs_a_stereo_source():
    with pytest.raises(ConfigError, match="'learned-stereo' codes stereo pairs .* only, but "
                                          "source.type 'synthetic_video' gives one view"):
        from_dict({**base(), "codec": {"name": "learned-stereo"}})
    assert from_dict({"source": {"type": "synthetic_stereo"},
                      "codec": {"name": "learned-stereo"}}).unit_kind == "pair"

"""The codec registry: specs declared beside each class, read without importing torch."""

import subprocess
import sys

import pytest

from codecflow.codecs import registry
from codecflow.errors import CodecError


def test_every_spec_is_consistent():
    names = registry.codec_names()
    assert {"x264", "x265", "x265-intra", "jpeg", "webp", "learned-intra",
            "compressai:<model>"} <= set(names)
    for n in names:
        s = registry.spec(n.replace("<model>", "mbt2018-mean"))
        assert s.unit_kinds and set(s.unit_kinds) <= {"frame", "pair", "gop"}
        assert s.views and set(s.views) <= {1, 2} and s.layers >= 1
        assert s.threads in ("", "torch", "param")
        assert (2 in s.views) == ("pair" in s.unit_kinds), n
        assert s.cls.spec is s and (s.variants or s.cls.name == s.name)


def test_learned_specs_need_torch_classical_do_not():
    assert registry.spec("learned-intra").needs_torch
    assert registry.spec("compressai:mbt2018").uses_device
    assert not any(registry.spec(n).needs_torch for n in ("x264", "x265", "jpeg", "webp"))


def test_unknown_names_list_the_known_ones():
    with pytest.raises(CodecError, match="unknown codec 'nope'.*learned-intra.*x264"):
        registry.spec("nope")


def test_reading_specs_does_not_import_torch():
    code = ("import sys; from codecflow.codecs import registry;"
            "[registry.spec(n.replace('<model>', 'mbt2018')) for n in registry.codec_names()];"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_every_codec_is_in_the_module_table():
    from codecflow.codecs import registry

    registry.codec_names()  # imports every module
    for name, s in registry._SPECS.items():
        assert name in registry.CODEC_MODULES, name
        assert s.cls.__module__ == registry.CODEC_MODULES[name], name


def test_a_learned_codec_needs_no_pyav():
    """Asking for one codec imports only its module: learned codecs run where PyAV is not
    installed (a GPU machine with torch only)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import sys; sys.modules['av'] = None\n"
            "from codecflow.codecs.registry import create_codec, spec\n"
            "assert spec('learned-stereo-si').views == (2, 1)\n"
            "create_codec('learned-intra', q=10)\n"
            "assert 'codecflow.codecs.classical.pyav_codecs' not in sys.modules\n"
            "print('ok')")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr

"""The data model imports without any codec: sources, the wire protocol and sinks rely on it,
and never import the codec registry or torch."""

import subprocess
import sys

import pytest


def _imported(modules: str) -> list:
    code = (f"import sys, {modules};"
            "print(' '.join(m for m in sys.modules if m.startswith('codecflow') or m == 'torch'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_data_model_and_protocol_import_nothing_of_codecs():
    got = _imported("codecflow.data, codecflow.pipeline.protocol")
    assert not [m for m in got if m.startswith("codecflow.codecs") or m == "torch"], got


@pytest.mark.parametrize("module", ["codecflow.stages.sink_stage", "codecflow.stages.source_stage",
                                    "codecflow.stages.sources.images"])
def test_stages_import_no_registry_and_no_torch(module):
    got = _imported(module)
    assert "codecflow.codecs.base" not in got and "torch" not in got, got

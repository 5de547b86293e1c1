"""Every command in the README's code blocks is checked, so that an example cannot silently
break:
* pipeline runs (`python run_pipeline.py CONFIG --set ...`): `codecflow validate` with the same
  arguments, which loads the config, applies every override and opens the input;
* `codecflow` commands: parsed by the real command-line parser (synopsis lines: the subcommand
  and every option they name must exist);
* `python bench/NAME.py`: the script exists and its `--help` runs.
The quick start's demo runs in CI (`.ci/run`) and the test command is this suite."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SHARED_DATA, run_cli

SKIP_PREFIXES = ("python3 -m venv", "pip install", ". .venv", "python -m pytest")


def readme_commands() -> list:
    text = (ROOT / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines = []
        for raw in block.splitlines():
            if raw.lstrip().startswith("#") or not raw.strip():
                continue
            line = raw.split("  #", 1)[0].rstrip()  # a trailing comment
            if raw[:1].isspace() and lines:  # a synopsis continued on the next line
                lines[-1] += " " + line.strip()
            else:
                lines.append(line)
        for line in lines:
            cmds += [c.strip() for c in line.split(" && ")]
    return [c for c in cmds if not c.startswith(SKIP_PREFIXES)]


def is_synopsis(cmd: str) -> bool:
    """A usage line with placeholders (CONFIG, [--opt ...], a|b, ...) rather than a command."""
    return any(t in cmd for t in ("[", "|", "...")) or bool(
        re.search(r"(^|\s)(CONFIG|DIR|NAME|IN\.cfl)(\s|$)", cmd))


def _subparser(parser, name: str):
    for action in parser._actions:  # noqa: SLF001 - argparse keeps subparsers here
        if hasattr(action, "choices") and isinstance(action.choices, dict) and \
                name in action.choices:
            return action.choices[name]
    return None


def check_cli_synopsis(argv: list) -> None:
    from codecflow.cli import build_parser

    parser = build_parser(argv[0])
    sub = _subparser(parser, argv[0])
    assert sub is not None, f"no subcommand {argv[0]!r}"
    if len(argv) > 1 and _subparser(sub, argv[1]) is not None:  # e.g. train image
        sub = _subparser(sub, argv[1])
    known = set(sub._option_string_actions)  # noqa: SLF001
    for tok in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", " ".join(argv)):
        assert tok in known, f"option {tok} is not an option of `codecflow {argv[0]}`"


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_check():
    kinds = {c.split()[0] for c in COMMANDS}
    assert {"codecflow", "python"} <= kinds and len(COMMANDS) > 20, COMMANDS


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[:70])
def test_readme_command(cmd, tmp_path):
    argv = shlex.split(cmd)
    if "../shared/data" in cmd and not SHARED_DATA.is_dir():
        pytest.skip(f"needs the real data folder {SHARED_DATA}")
    if argv[:2] == ["python", "run_pipeline.py"] or argv[:2] == ["codecflow", "run"]:
        rest = argv[2:]
        if is_synopsis(cmd):
            return check_cli_synopsis(["run", *[a for a in rest if a.startswith("--")]])
        if any(a.startswith("source.device=") for a in rest):
            # the camera itself cannot be opened here: the config and its overrides are
            # checked as far as the source (the device is the first thing it opens)
            from codecflow.pipeline.config import load_config

            load_config(str(ROOT / rest[0]), [a for a in rest[1:] if a != "--set"])
            return
        p = run_cli("validate", *rest, "--set", f"output.dir={tmp_path / 'out'}", timeout=120)
        assert p.returncode == 0, f"{cmd}\n{p.stderr[-2000:]}"
        return
    if argv[0] == "codecflow":
        if is_synopsis(cmd):
            return check_cli_synopsis(argv[1:])
        from codecflow.cli import build_parser

        try:
            build_parser(argv[1]).parse_args(argv[1:])
        except SystemExit as e:
            pytest.fail(f"`{cmd}` does not parse (exit {e.code})")
        return
    if argv[0] == "python" and argv[1].startswith(("bench/", "scripts/")):
        script = ROOT / argv[1]
        assert script.is_file(), f"{script} does not exist"
        p = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
        return
    pytest.fail(f"README command of an unknown kind: {cmd}")

"""Which options a training command was given on its command line.

A relaunched run keeps its stored configuration (learning rate, crops, schedule, ...) and takes
from the new command line only the options written there: a default value must not overwrite
what the run was started with (`loop.run`).
"""

from __future__ import annotations

import argparse

GIVEN = "given_options"
_TRACKED: dict = {}


def _tracked(cls: type) -> type:
    if cls not in _TRACKED:
        def __call__(self, parser, namespace, values, option_string=None):
            cls.__call__(self, parser, namespace, values, option_string)
            setattr(namespace, GIVEN, getattr(namespace, GIVEN, frozenset()) | {self.dest})

        _TRACKED[cls] = type(f"Tracked{cls.__name__}", (cls,), {"__call__": __call__})
    return _TRACKED[cls]


def track_given(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` record the destinations of the options it reads from the command line
    (see `given`). Call after the last ``add_argument``."""
    for action in parser._actions:  # argparse offers no public way to wrap its actions
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            action.__class__ = _tracked(type(action))


def given(args: argparse.Namespace) -> list:
    """The destinations of the options given on the command line (sorted)."""
    return sorted(getattr(args, GIVEN, ()))

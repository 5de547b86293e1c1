#!/usr/bin/env python3
"""Run a codecflow pipeline: `python run_pipeline.py CONFIG [--set KEY=VALUE ...]`.

Same as `codecflow run CONFIG`; see README.md.
"""

import sys

from codecflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))

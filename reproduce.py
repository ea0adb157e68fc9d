#!/usr/bin/env python
"""Reproduce the IFBFNet paper's tables: `python reproduce.py --table 2 --preset smoke --executor local`.
See `python reproduce.py --help` and README.md."""

import sys

from ifbf.commands.reproduce import cli

if __name__ == "__main__":
    sys.exit(cli())

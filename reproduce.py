#!/usr/bin/env python
"""Reproduce a paper's tables (IFBFNet's by default, DANet's with --paper danet):
`python reproduce.py --table 2 --preset smoke --executor local`.
See `python reproduce.py --help` and README.md."""

import sys

from ifbf.commands.reproduce import cli

if __name__ == "__main__":
    sys.exit(cli())

"""``ifbf import-server-result --run RUN FILE``: record the Cityscapes test server's per-class IoUs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ifbf.engine.server_result import import_server_result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="run directory whose test export was submitted")
    parser.add_argument("file", type=Path, help="CSV or JSON of the 19 class IoUs and the mIoU (percent or 0-1)")


def run(args: argparse.Namespace) -> int:
    key, entry = import_server_result(args.run, args.file)
    print(f"recorded the test-server result in {args.run / 'metrics.json'} (evaluation {key}): "
          f"mIoU {100 * entry['miou']:.2f}")
    return 0

"""``ifbf train --config FILE [--out RUN_DIR] [overrides]``: train and evaluate one run (resumable)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ifbf.commands.config import add_config_arguments
from ifbf.config import load_config
from ifbf.identity import config_hash, weights_overrides
from ifbf.engine.run import run as run_training
from ifbf.engine.train import Interrupted

EXIT_INTERRUPTED = 3  # stopped by a signal after a checkpoint: the same command resumes


def default_run_dir(cfg_hash: str) -> Path:
    return Path("runs") / cfg_hash


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", help="run directory (default: runs/<config hash>); resumed if it holds a checkpoint")
    parser.add_argument("--weights", nargs="+", default=[], metavar="KEY=PATH",
                        help="ImageNet weights per backbone, e.g. resnet101=/data/r101.pth (= model.weights.KEY=PATH)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, [*args.overrides, *weights_overrides(args.weights)])
    out = Path(args.out) if args.out else default_run_dir(config_hash(cfg))
    try:
        run_training(cfg, out, progress=not args.no_progress)
    except Interrupted as stop:
        print(f"ifbf train: {stop}; run the same command again to resume from {out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0

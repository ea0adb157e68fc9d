"""``ifbf train --config FILE [--out RUN_DIR] [overrides]``: train and evaluate one run (resumable)."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from ifbf.commands.config import add_config_arguments
from ifbf.config import load_config
from ifbf.identity import config_hash, weights_flag_overrides
from ifbf.engine.run import run as run_training
from ifbf.engine.train import Interrupted
from ifbf.errors import ExitCode
from ifbf.orchestrate.executors import this_job
from ifbf.store.rundir import RunDir


def default_run_dir(cfg_hash: str) -> Path:
    return Path("runs") / cfg_hash


def launch_rank() -> int:
    """This process's rank as its launcher set it (torchrun's RANK; a scheduler's launcher's own variable,
    exported as RANK by ``cli.main``)."""
    return int(os.environ.get("RANK") or 0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", help="run directory (default: runs/<config hash>); resumed if it holds a checkpoint")
    parser.add_argument("--weights", nargs="+", default=[], metavar="KEY=PATH",
                        help="ImageNet weights per backbone, e.g. resnet101=/data/r101.pth (= model.weights.KEY=PATH)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, [*args.overrides, *weights_flag_overrides(args.weights)])
    out = Path(args.out) if args.out else default_run_dir(config_hash(cfg))
    # one trainer per run directory: a second `ifbf train` on a run being trained stops with LockHeld (ExitCode.USAGE);
    # the lock records the scheduler's job: requeued onto another node, the job takes over its own lock
    lock = RunDir(out).train_lock(cfg.runtime.lock_stale_s, this_job()) if launch_rank() == 0 else nullcontext()
    try:
        with lock:
            run_training(cfg, out, progress=not args.no_progress)
    except Interrupted as stop:
        print(f"ifbf train: {stop}; run the same command again to resume from {out}", file=sys.stderr)
        return ExitCode.RESUMABLE  # stopped after a checkpoint: the same command resumes
    return ExitCode.OK

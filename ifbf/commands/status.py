"""``ifbf status [RESULTS] [--preset P]``: one line per run directory (scheduler state, iteration, loss,
images/s, ETA, log) and the device-hours spent and left. Reads only; one scheduler query for all jobs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ifbf.errors import IfbfError
from ifbf.orchestrate.status import collect, render, run_targets
from ifbf.store.rundir import RESULTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS, help="results folder (default: results/)")
    parser.add_argument("--preset", help="only this preset's runs (default: every preset under RESULTS)")


def run(args: argparse.Namespace) -> int:
    results: Path = args.results
    if not results.is_dir():
        raise IfbfError(f"{results} is not a folder; give the --results folder reproduce.py wrote to")
    presets = [args.preset] if args.preset else sorted(p.name for p in results.iterdir() if (p / "runs").is_dir())
    targets = run_targets(results, presets)
    if not targets:
        raise IfbfError(f"no run directories under {results}/{args.preset or '*'}/runs; run reproduce.py first")
    print(render(collect(targets)))
    return 0

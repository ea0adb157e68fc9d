"""``ifbf status [RESULTS] [--preset P]``: one line per run directory (scheduler state, iteration, loss,
images/s, ETA, log) and the device-hours spent and left. Reads only; one scheduler query for all jobs. Finds
every paper's runs (RESULTS/<preset>/runs, RESULTS/<paper>/<preset>/runs; RESULTS may be one paper's own
folder), labelled with the preset, or <paper>/<preset> for a paper other than the default."""

from __future__ import annotations

import argparse
from pathlib import Path

from ifbf.errors import IfbfError
from ifbf.orchestrate.folders import run_folders
from ifbf.orchestrate.status import collect, render, run_targets
from ifbf.store.rundir import RESULTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS,
                        help="results folder (default: results/): every paper's runs in it, another paper's labelled "
                             "<paper>/<preset>; or one paper's own folder (results/<paper>/)")
    parser.add_argument("--preset", help="only this preset's runs, of every paper (default: every preset)")


def run(args: argparse.Namespace) -> int:
    results: Path = args.results
    if not results.is_dir():
        raise IfbfError(f"{results} is not a folder; give the --results folder reproduce.py wrote to")
    targets = run_targets(run_folders(results, args.preset))
    if not targets:
        preset = args.preset or "*"
        raise IfbfError(f"no run directories under {results}/{preset}/runs nor {results}/<paper>/{preset}/runs; "
                        "run reproduce.py first")
    print(render(collect(targets)))
    return 0

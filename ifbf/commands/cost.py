"""``ifbf cost`` (also ``ifbf profile``): parameters, FLOPs and latency of a model config, or a table's cost
table."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ifbf.commands.config import add_config_arguments
from ifbf.config import Config, load_config
from ifbf.experiments import (DEFAULT_PAPER, EXPERIMENTS, load_paper, load_preset, load_table, papers, results_of,
                              row_config)
from ifbf.models.cost import measure
from ifbf.engine.cost_table import cost_table
from ifbf.store.rundir import RESULTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, None, "the --paper's experiments/<paper>/base.yaml")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="input size for FLOPs and latency (default: 512 1024; with --table: 1024 2048 for FLOPs)")
    parser.add_argument("--repeat", type=int, default=3, help="timed forward passes (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--table", type=int,
                        help="write results/<preset>/cost_table<N>.md for every row of table N (another paper's: "
                             "results/<paper>/<preset>/cost_table<N>.md)")
    parser.add_argument("--preset", default="paper", help="with --table: the preset of the rows (default: paper)")
    parser.add_argument("--paper", default=DEFAULT_PAPER, choices=papers(),
                        help=f"whose table (with --table) or whose base.yaml (without --config; default: "
                             f"{DEFAULT_PAPER})")
    parser.add_argument("--latency-size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"),
                        help="with --table: input size for the CPU latency (default: 512 1024)")
    parser.add_argument("--results", type=Path, default=RESULTS)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.table is not None:
        size = tuple(args.size) if args.size else (1024, 2048)
        table, preset = load_table(args.table, args.paper), load_preset(args.preset, args.paper)
        rows = [(row.name, row_config(row, preset)) for row in table.runnable()]
        path = cost_table(args.table, table.caption, table.title, rows, args.preset, size, tuple(args.latency_size),
                          args.repeat, results_of(args.results, args.paper) / args.preset)
        print(path.read_text(), end="")
        print(f"wrote {path}")
        return 0
    path = Path(args.config) if args.config else load_paper(args.paper).base
    cfg = load_config(path, args.overrides)
    h, w = args.size or (512, 1024)
    cost = measure(cfg.model, h, w, repeat=args.repeat)
    print(f"model       {measured(cfg, path, len(args.overrides))}")
    print(f"params      {cost.params_m:10.2f} M")
    print(f"FLOPs       {cost.gflops:10.1f} G   (input 1x3x{h}x{w}; 2 FLOPs per multiply-add)")
    print(f"CPU latency {cost.latency_ms:10.1f} ms  (median of {args.repeat}, {torch.get_num_threads()} threads)")
    return 0


def measured(cfg: Config, path: Path, overrides: int) -> str:
    """What was measured: "danet, resnet101 (experiments/danet/base.yaml: DANet's base)"; a config of no paper's
    base is named by its path, with the number of overrides."""
    resolved = path.resolve()
    shown = resolved.relative_to(EXPERIMENTS.parent) if resolved.is_relative_to(EXPERIMENTS.parent) else path
    whose = next((f": {load_paper(p).label}'s base" for p in papers() if load_paper(p).base == resolved), "")
    more = f" + {overrides} override{'s' if overrides > 1 else ''}" if overrides else ""
    return f"{cfg.model.arch}, {cfg.model.backbone} ({shown}{whose}{more})"

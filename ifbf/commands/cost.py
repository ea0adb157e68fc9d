"""``ifbf cost`` (also ``ifbf profile``): parameters, FLOPs and latency of a model config, or a table's cost
table."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ifbf.commands.config import add_config_arguments
from ifbf.config import load_config
from ifbf.experiments import DEFAULT_PAPER, load_preset, load_table, papers, results_of, row_config
from ifbf.models.cost import measure
from ifbf.engine.cost_table import cost_table
from ifbf.store.rundir import RESULTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="input size for FLOPs and latency (default: 512 1024; with --table: 1024 2048 for FLOPs)")
    parser.add_argument("--repeat", type=int, default=3, help="timed forward passes (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--table", type=int, help="write results/<preset>/cost_table<N>.md for every row of table N")
    parser.add_argument("--preset", default="paper", help="with --table: the preset of the rows (default: paper)")
    parser.add_argument("--paper", default=DEFAULT_PAPER, choices=papers(),
                        help=f"with --table: whose table (default: {DEFAULT_PAPER})")
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
        path = cost_table(args.table, table.title, rows, args.preset, size, tuple(args.latency_size), args.repeat,
                          results_of(args.results, args.paper) / args.preset)
        print(path.read_text(), end="")
        print(f"wrote {path}")
        return 0
    cfg = load_config(args.config, args.overrides)
    h, w = args.size or (512, 1024)
    cost = measure(cfg.model, h, w, repeat=args.repeat)
    print(f"params      {cost.params_m:10.2f} M")
    print(f"FLOPs       {cost.gflops:10.1f} G   (input 1x3x{h}x{w}; 2 FLOPs per multiply-add)")
    print(f"CPU latency {cost.latency_ms:10.1f} ms  (median of {args.repeat}, {torch.get_num_threads()} threads)")
    return 0

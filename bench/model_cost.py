"""Benchmark: parameters, FLOPs and CPU latency of every Table 2 row (paper preset, batch 1).

    .venv/bin/python bench/model_cost.py [--size 512 1024] [--repeat 3] [--threads 2]

Latency is the median eager forward in eval mode with BatchNorm (model.norm=bn; the InPlace-ABN kinds
have the same inference cost). Target: the full IFBFNet (R101) within 1.05x the latency of the
"R101 + ASPP + skip" row. Figures are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse

import torch

from ifbf.config import BASE_CONFIG, load_config
from ifbf.experiments import load_table
from ifbf.profile import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 1024))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--table", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    costs = {}
    print(f"| row | params (M) | GFLOPs @ {args.size[0]}x{args.size[1]} | CPU latency (ms, {args.threads} threads) |")
    print("|---|---:|---:|---:|")
    for row in load_table(args.table).runnable():
        cfg = load_config(BASE_CONFIG, [*row.overrides, "model.norm=bn"])
        cost = measure(cfg.model, *args.size, repeat=args.repeat)
        costs[row.name] = cost
        print(f"| {row.name} | {cost.params_m:.2f} | {cost.gflops:.1f} | {cost.latency_ms:.0f} |", flush=True)
    if args.table == 2:
        full, skip = costs["R101 IFBFNet"], costs["R101 + ASPP + skip"]
        print(f"\nR101 IFBFNet / R101 + ASPP + skip: latency {full.latency_ms / skip.latency_ms:.3f}x, "
              f"FLOPs {full.gflops / skip.gflops:.3f}x, params {full.params_m / skip.params_m:.3f}x")


if __name__ == "__main__":
    main()

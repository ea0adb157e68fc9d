"""Benchmark: parameters, FLOPs and CPU latency of every Table 2 row (paper preset, batch 1).

    .venv/bin/python bench/model_cost.py [--size 512 1024] [--repeat 3] [--threads 2]

Latency is the median eager forward in eval mode of the deployment form (BatchNorm folded into the convs,
channels_last; model.norm=bn). Target: the full IFBFNet (R101) within 1.05x the latency of the
"R101 + ASPP + skip" row; that ratio is measured separately with the two models timed alternately
(--rounds times) so that machine noise hits both alike. Figures are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ifbf.config import BASE_CONFIG, load_config
from ifbf.experiments import load_table
from ifbf.models import build_model
from ifbf.models.deploy import inference_ready
from ifbf.models.cost import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 1024))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--table", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds for the latency ratio")
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
        ratio = alternating_ratio(args.size, args.rounds)
        print(f"\nR101 IFBFNet / R101 + ASPP + skip: latency {ratio:.3f}x (median of {args.rounds} alternating "
              f"rounds), FLOPs {full.gflops / skip.gflops:.3f}x, params {full.params_m / skip.params_m:.3f}x")


def alternating_ratio(size: tuple[int, int], rounds: int) -> float:
    """Median over rounds of latency(full IFBFNet) / latency(R101 + ASPP + skip), timed back to back."""
    rows = {r.name: r for r in load_table(2).runnable()}
    models = [
        inference_ready(build_model(load_config(BASE_CONFIG, [*rows[name].overrides, "model.norm=bn"]).model).eval())
        for name in ("R101 + ASPP + skip", "R101 IFBFNet")
    ]
    x = torch.randn(1, 3, *size).contiguous(memory_format=torch.channels_last)

    def once(model) -> float:
        start = time.perf_counter()
        model(x)
        return time.perf_counter() - start

    ratios = []
    with torch.no_grad():
        for model in models:
            model(x)  # warm-up
        for _ in range(rounds):
            skip = once(models[0])
            full = once(models[1])
            ratios.append(full / skip)
    return statistics.median(ratios)


if __name__ == "__main__":
    main()

"""``ifbf profile``: parameters, FLOPs at a given input size and CPU latency of a model config."""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ifbf.config import ModelConfig, load_config
from ifbf.config_cmd import add_config_arguments
from ifbf.models import build_model


@dataclass(frozen=True)
class ModelCost:
    params_m: float  # millions of parameters
    gflops: float  # 1e9 floating-point operations (2 per multiply-add) of one forward pass
    latency_ms: float  # median CPU forward latency, eval mode, batch 1


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(cfg: ModelConfig, height: int, width: int, repeat: int = 3, threads: int | None = None) -> ModelCost:
    """Cost of the inference network (aux head excluded from FLOPs and latency, as it is unused there)."""
    if threads:
        torch.set_num_threads(threads)
    model = build_model(cfg).eval()
    x = torch.randn(1, 3, height, width)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(x)
        times = []
        for _ in range(repeat + 1):  # the first pass warms up allocators and is dropped
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return ModelCost(count_params(model) / 1e6, counter.get_total_flops() / 1e9, 1e3 * statistics.median(times[1:]))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"), help="input size (default: 512 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="timed forward passes (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    cost = measure(cfg.model, *args.size, repeat=args.repeat, threads=args.threads)
    h, w = args.size
    print(f"params      {cost.params_m:10.2f} M")
    print(f"FLOPs       {cost.gflops:10.1f} G   (input 1x3x{h}x{w}; 2 FLOPs per multiply-add)")
    print(f"CPU latency {cost.latency_ms:10.1f} ms  (median of {args.repeat}, {torch.get_num_threads()} threads)")
    return 0

"""What a model costs: parameters, FLOPs at a given input size, CPU latency of its deployment form and, on a
GPU, latency and peak training memory (``ifbf cost``)."""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ifbf.config import ModelConfig
from ifbf.models import build_model
from ifbf.models.deploy import inference_ready


@dataclass(frozen=True)
class ModelCost:
    params_m: float  # millions of parameters
    gflops: float  # 1e9 floating-point operations (2 per multiply-add) of one forward pass
    latency_ms: float  # median CPU forward latency, eval mode, batch 1


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(cfg: ModelConfig, height: int, width: int, repeat: int = 3, threads: int | None = None) -> ModelCost:
    """Cost of the inference network (aux head excluded from FLOPs and latency, as it is unused there).

    Latency is that of the deployment form: BatchNorm folded into the convolutions, channels_last."""
    if threads:
        torch.set_num_threads(threads)
    model = build_model(cfg).eval()
    x = torch.randn(1, 3, height, width)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(x)
        fast = inference_ready(model)
        x = x.contiguous(memory_format=torch.channels_last)
        times = []
        for _ in range(repeat + 1):  # the first pass warms up allocators and is dropped
            start = time.perf_counter()
            fast(x)
            times.append(time.perf_counter() - start)
    return ModelCost(count_params(model) / 1e6, counter.get_total_flops() / 1e9, 1e3 * statistics.median(times[1:]))


def gpu_cost(cfg: ModelConfig, height: int, width: int, crop: tuple[int, int], batch: int = 2) -> tuple[float, float]:
    """(forward latency in ms at height x width, peak memory in GiB of one training step at ``crop``)."""
    device = torch.device("cuda")
    model = build_model(cfg).to(device).eval()
    x = torch.randn(1, 3, height, width, device=device)
    with torch.no_grad():
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            model(x)
        torch.cuda.synchronize()
    latency = 1e3 * (time.perf_counter() - start) / 10
    model.train()
    torch.cuda.reset_peak_memory_stats()
    out = model(torch.randn(batch, 3, *crop, device=device))
    sum(v.float().mean() for v in out.values()).backward()
    torch.cuda.synchronize()
    return latency, torch.cuda.max_memory_allocated() / 2**30


def measure_flops(cfg: ModelConfig, height: int, width: int) -> float:
    model = build_model(cfg).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, height, width))
    return counter.get_total_flops() / 1e9


def training_flops(cfg: ModelConfig, crop: tuple[int, int]) -> float:
    """FLOPs of one training image at ``crop``: 3 x the forward pass in training mode (aux head included; a
    backward pass costs about twice its forward), counted on the meta device: no compute, no weights read."""
    cfg = dataclasses.replace(cfg, weights=type(cfg.weights)(), norm="bn")  # same FLOPs; nothing to load
    with torch.device("meta"):
        model = build_model(cfg).train()
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(2, 3, *crop, device="meta"))  # 2: BatchNorm's pooled branch needs > 1 value
    return 3 * counter.get_total_flops() / 2

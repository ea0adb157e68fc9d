"""``ifbf profile``: parameters, FLOPs at a given input size and CPU latency of a model config."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from ifbf.config import ModelConfig, WeightsConfig, load_config
from ifbf.config_cmd import add_config_arguments
from ifbf.models import build_model
from ifbf.models.inference import inference_ready


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


def cost_table(number: int, preset: str, size: tuple[int, int], latency_size: tuple[int, int], repeat: int,
               out: Path) -> Path:
    """results/<preset>/cost_table<N>.md: what each row of a table costs, beside what it gains."""
    import pandas as pd

    from ifbf.experiments import load_preset, load_table, row_config

    table, p = load_table(number), load_preset(preset)
    records = []
    on_gpu = torch.cuda.is_available()
    for row in tqdm(table.runnable(), desc=f"cost of table {number}", unit="row", disable=None):
        cfg = row_config(row, p)
        model_cfg = dataclasses.replace(cfg.model, weights=WeightsConfig())
        params = count_params(build_model(model_cfg)) / 1e6
        flops = measure_flops(model_cfg, *size)
        cpu = measure(dataclasses.replace(model_cfg, norm="bn"), *latency_size, repeat=repeat).latency_ms
        record = {"row": row.name, "backbone": cfg.model.backbone, "params (M)": round(params, 2), f"GFLOPs @ {size[0]}x{size[1]}": round(flops, 1),
                  f"CPU latency @ {latency_size[0]}x{latency_size[1]} (ms)": round(cpu)}
        if on_gpu:
            latency, memory = gpu_cost(model_cfg, *size, cfg.data.crop_size)
            record[f"GPU latency @ {size[0]}x{size[1]} (ms)"] = round(latency, 1)
            record["peak training memory (GiB, batch 2)"] = round(memory, 2)
        records.append(record)
    df = pd.DataFrame.from_records(records).set_index("row")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cost_table{number}.md"
    threads = torch.get_num_threads()
    note = (f"Preset {preset}. CPU latency: median of {repeat} forward passes of the deployment form (BatchNorm "
            f"and balance weights folded into the convolutions, channels_last), batch 1, {threads} threads. "
            "FLOPs: 2 per multiply-add, aux head excluded (inference network). "
            + ("GPU columns: this machine's GPU." if on_gpu else "No GPU here: GPU latency and memory not measured."))
    path.write_text(f"# Cost of Table {number}'s rows: {table.title}\n\n{df.to_markdown()}\n\n{note}\n")
    return path


def measure_flops(cfg: ModelConfig, height: int, width: int) -> float:
    model = build_model(cfg).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, height, width))
    return counter.get_total_flops() / 1e9


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="input size for FLOPs and latency (default: 512 1024; with --table: 1024 2048 for FLOPs)")
    parser.add_argument("--repeat", type=int, default=3, help="timed forward passes (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--table", type=int, help="write results/<preset>/cost_table<N>.md for every row of table N")
    parser.add_argument("--preset", default="paper", help="with --table: the preset of the rows (default: paper)")
    parser.add_argument("--latency-size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"),
                        help="with --table: input size for the CPU latency (default: 512 1024)")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "results")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.table is not None:
        size = tuple(args.size) if args.size else (1024, 2048)
        path = cost_table(args.table, args.preset, size, tuple(args.latency_size), args.repeat,
                          args.results / args.preset)
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

"""Benchmark: training throughput, memory and MFU of the GPU fast path, and evaluation cost, in one run.

    .venv/bin/python bench/train_throughput.py --device cpu --size small          # CPU check of the plumbing
    .venv/bin/python bench/train_throughput.py --device cpu --size smoke          # the smoke preset's IFBFNet
    .venv/bin/python bench/train_throughput.py --device cuda --size paper         # R101, 876x876, batch 4

Variants, each a few training steps on random data with the plumbing of ifbf/engine (engine/precision.py):
fp32 eager (BatchNorm) | bf16 + channels_last | + torch.compile | InPlace-ABN fp32 | InPlace-ABN bf16 +
channels_last. Prints images/s, peak memory (CUDA) and the bytes saved for backward (any device), the
ratios the fast path is judged by, MFU = 3 x forward FLOPs (ifbf.models.cost.measure_flops, aux head excluded)
x images/s / the GPU's dense bf16 peak (table below, or --peak-tflops), and seconds per validation image
with the paper's 6 scales + flip (fp32 and bf16).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

from ifbf.config import BASE_CONFIG, Config, EvalConfig, load_config
from ifbf.engine.evaluate import predict
from ifbf.engine.precision import autocast, compile_net
from ifbf.engine.train import build_optimizer
from ifbf.engine.losses import total_loss
from ifbf.models import build_model
from ifbf.models.cost import measure_flops

SIZES = {  # model and batch of each --size
    "small": ["model.backbone=resnet18", "model.spatial_channels=32", "data.crop_size=[64, 64]", "data.batch_size=2",
              "train.ohem_min_kept=500"],
    "smoke": ["model.backbone=resnet34", "data.crop_size=[96, 96]", "data.batch_size=4", "train.ohem_min_kept=2000"],
    "paper": ["model.backbone=resnet101", "data.crop_size=[876, 876]", "data.batch_size=4"],
}
EVAL_SIZE = {"small": (64, 128), "smoke": (128, 256), "paper": (1024, 2048)}  # (H, W) of a validation image
# Dense bf16 tensor-core peak, TFLOP/s (vendor data sheets); the first name that occurs in the device name wins.
PEAK_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0),
               ("L40", 181.0), ("A10G", 70.0), ("A10", 125.0), ("L4", 121.0), ("V100", 125.0), ("4090", 165.0),
               ("3090", 71.0)]
VARIANTS = [  # name, overrides, compile
    ("fp32 eager", ["model.norm=bn"], False),
    ("bf16 + channels_last", ["model.norm=bn", "train.amp=bf16", "train.channels_last=true"], False),
    ("bf16 + channels_last + compile", ["model.norm=bn", "train.amp=bf16", "train.channels_last=true"], True),
    ("InPlace-ABN fp32", ["model.norm=inplace_abn"], False),
    ("InPlace-ABN bf16 + channels_last", ["model.norm=inplace_abn", "train.amp=bf16", "train.channels_last=true"],
     False),
]


@dataclass
class Result:
    images_per_s: float
    peak_gib: float | None  # CUDA only
    saved_mib: float  # tensors saved for backward by one step (distinct storages)


class SavedBytes:
    """Counts the distinct storages autograd saves for backward (activation memory, on any device)."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    def mib(self) -> float:
        return sum(self.storages.values()) / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(cfg: Config, device: torch.device, steps: int, compile_backend: str | None, warmup: int = 3) -> Result:
    t = cfg.train
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).train()
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = compile_net(model, compile_backend is not None, backend=compile_backend or "inductor")
    optimizer, scheduler = build_optimizer(model, t)
    b, (h, w) = cfg.data.batch_size, cfg.data.crop_size
    x = torch.randn(b, 3, h, w, device=device)
    y = torch.randint(0, cfg.model.num_classes, (b, h, w), device=device)
    if t.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with autocast(t.amp, device):
            out = net(x)
        loss = total_loss(out, y, t)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

    for _ in range(warmup):
        step()
    saved = SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return Result(steps * b / seconds, peak, saved.mib())


def eval_seconds(cfg: Config, device: torch.device, size: tuple[int, int], amp: str, repeat: int = 2) -> float:
    """Seconds per validation image: the paper's 6 scales + flip, whole image (engine.evaluate.predict)."""
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).eval()
    image = torch.randn(1, 3, *size, device=device)
    ms = EvalConfig(flip=True)  # the default scales are the paper's 6
    with torch.no_grad(), autocast(amp, device):
        predict(model, image, ms, cfg.model.num_classes)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeat):
            predict(model, image, ms, cfg.model.num_classes)
        _sync(device)
    return (time.perf_counter() - start) / repeat


def peak_tflops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    if given:
        return given, f"{given:g} TFLOP/s (--peak-tflops)"
    if device.type != "cuda":
        return None, "no peak for a CPU (give --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS:
        if key in name:
            return tflops, f"{name}: {tflops:g} TFLOP/s dense bf16"
    return None, f"{name}: not in the peak table (give --peak-tflops)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="paper" if torch.cuda.is_available() else "small")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend; 'none' skips it")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation timing")
    args = parser.parse_args()
    device = torch.device(args.device)
    base = SIZES[args.size]
    cfg0 = load_config(BASE_CONFIG, base)
    (h, w), b = cfg0.data.crop_size, cfg0.data.batch_size
    gflops = measure_flops(cfg0.model, h, w)
    peak, peak_note = peak_tflops(device, args.peak_tflops)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{where}; size {args.size}: IFBFNet {cfg0.model.backbone} {h}x{w}, batch {b}, {args.steps} steps; "
          f"forward {gflops:.1f} GFLOPs/image; peak {peak_note}")
    results: dict[str, Result] = {}
    print(f"{'variant':<34}{'img/s':>9}{'peak GiB':>10}{'saved MiB':>11}{'MFU':>8}")
    for name, overrides, compiled in VARIANTS:
        if compiled and args.compile_backend == "none":
            continue
        cfg = load_config(BASE_CONFIG, [*base, *overrides])
        r = throughput(cfg, device, args.steps, args.compile_backend if compiled else None)
        results[name] = r
        mfu = f"{100 * 3 * gflops * 1e9 * r.images_per_s / (peak * 1e12):.1f}%" if peak else "n/a"
        peak_gib = f"{r.peak_gib:.2f}" if r.peak_gib is not None else "n/a"
        print(f"{name:<34}{r.images_per_s:>9.2f}{peak_gib:>10}{r.saved_mib:>11.0f}{mfu:>8}")
    fp32, fast = results["fp32 eager"], results["bf16 + channels_last"]
    print(f"ratio bf16 + channels_last / fp32 eager: {fast.images_per_s / fp32.images_per_s:.2f}x images/s")
    if "bf16 + channels_last + compile" in results:
        comp = results["bf16 + channels_last + compile"]
        print(f"ratio + compile / fp32 eager: {comp.images_per_s / fp32.images_per_s:.2f}x images/s")
    for label, bn, iabn in (("fp32", "fp32 eager", "InPlace-ABN fp32"),
                            ("bf16", "bf16 + channels_last", "InPlace-ABN bf16 + channels_last")):
        a, c = results[bn], results[iabn]
        mem = f"; peak memory {c.peak_gib / a.peak_gib:.2f}x" if a.peak_gib else ""
        print(f"InPlace-ABN / BN, {label}: saved for backward {c.saved_mib / a.saved_mib:.2f}x{mem}; "
              f"images/s {c.images_per_s / a.images_per_s:.2f}x")
    if not args.no_eval:
        size = EVAL_SIZE[args.size]
        cfg = load_config(BASE_CONFIG, [*base, "model.norm=bn"])
        s32, s16 = eval_seconds(cfg, device, size, "none"), eval_seconds(cfg, device, size, "bf16")
        print(f"evaluation, {size[1]}x{size[0]} image, 6 scales + flip: fp32 {s32:.2f} s/image, bf16 {s16:.2f} s/image")


if __name__ == "__main__":
    main()

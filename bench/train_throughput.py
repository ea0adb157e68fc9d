"""Benchmark: training throughput (images/s) and peak memory of one configuration.

    .venv/bin/python bench/train_throughput.py --preset smoke [--steps 20]          # CPU, smoke preset
    .venv/bin/python bench/train_throughput.py --gpu [--steps 30]                   # GPU comparisons

--gpu runs, in one process on one GPU: R101 IFBFNet at 876x876, batch 4, (a) fp32 eager vs AMP bf16 +
channels_last (target >= 2x images/s), (b) peak memory with BatchNorm vs InPlace-ABN (target <= 0.7x).
Figures are recorded in docs/performance.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import time

import torch

from ifbf.config import BASE_CONFIG, load_config
from ifbf.engine.train import build_optimizer
from ifbf.experiments import load_preset, load_table, row_config
from ifbf.engine.losses import total_loss
from ifbf.models import build_model


def throughput(overrides: list[str], steps: int, device: str, warmup: int = 3) -> tuple[float, float]:
    """(images per second, peak GPU memory in GiB or 0 on CPU) of ``steps`` training steps on random data."""
    cfg = load_config(BASE_CONFIG, overrides)
    t = cfg.train
    model = build_model(cfg.model).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, t)
    b, (h, w) = cfg.data.batch_size, cfg.data.crop_size
    x = torch.randn(b, 3, h, w, device=device)
    y = torch.randint(0, cfg.model.num_classes, (b, h, w), device=device)
    if t.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp)
    model.train()

    def step() -> None:
        with torch.autocast(device, dtype=amp, enabled=amp is not None and device == "cuda"):
            out = model(x)
        loss = total_loss(out, y, t)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    return steps * b / seconds, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    if not args.gpu:
        row = load_table(2).rows[-1]  # the full IFBFNet
        cfg = row_config(row, load_preset(args.preset))
        overrides = [f"model.backbone={cfg.model.backbone}", "model.norm=bn", f"data.crop_size={list(cfg.data.crop_size)}",
                     f"data.batch_size={cfg.data.batch_size}", f"train.ohem_min_kept={cfg.train.ohem_min_kept}"]
        ips, _ = throughput(overrides, args.steps, "cpu")
        print(f"CPU, {torch.get_num_threads()} threads, preset {args.preset} (IFBFNet {cfg.model.backbone}, "
              f"{cfg.data.crop_size[0]}x{cfg.data.crop_size[1]}, batch {cfg.data.batch_size}): {ips:.1f} images/s")
        return
    base = ["model.backbone=resnet101", "data.batch_size=4", "data.crop_size=[876, 876]"]
    fp32, mem_bn = throughput([*base, "model.norm=bn"], args.steps, "cuda")
    amp, _ = throughput([*base, "model.norm=bn", "train.amp=bf16", "train.channels_last=true"], args.steps, "cuda")
    _, mem_iabn = throughput([*base, "model.norm=inplace_abn"], args.steps, "cuda")
    print(f"GPU {torch.cuda.get_device_name()}: R101 IFBFNet 876x876 batch 4")
    print(f"fp32 eager: {fp32:.1f} img/s; AMP bf16 + channels_last: {amp:.1f} img/s; ratio {amp / fp32:.2f}x")
    print(f"peak memory BN {mem_bn:.2f} GiB, InPlace-ABN {mem_iabn:.2f} GiB; ratio {mem_iabn / mem_bn:.2f}x")


if __name__ == "__main__":
    main()

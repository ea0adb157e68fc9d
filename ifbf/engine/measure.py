"""Preflight measurement of one compute shape: a few real training iterations and evaluations, built exactly
as a training run builds them (``engine.train.build_training`` / ``forward_loss`` / ``optimizer_step``), timed,
with peak memory and the machine's facts. Writes into no run directory: one checkpoint is timed in a scratch
folder and deleted."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from ifbf.config import Config, EvalConfig
from ifbf.identity import eval_key
from ifbf.data.loader import eval_dataset, train_loader
from ifbf.engine.checkpoint import save_checkpoint
from ifbf.engine.dist import setup
from ifbf.engine.evaluate import predict
from ifbf.engine.precision import compile_net
from ifbf.engine.train import build_training, forward_loss, optimizer_step
from ifbf.store.measurement import InferenceTiming, IterationTimes, Machine, Measurement

GIB = 1024**3
# Interquartile range of the timed iterations over their median above which a measurement is not trusted:
# one shape's iterations should take the same time, so a wide spread means another load shared the machine.
UNSTABLE_SPREAD = 0.25


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated by torch on ``device``, or on CPU the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def facts(device: torch.device, world: int) -> Machine:
    """What the figures were measured on: date, host, device, torch/CUDA versions, processes, threads."""
    try:
        import inplace_abn  # optional: only its version is recorded
        abn = getattr(inplace_abn, "__version__", "installed")
    except ImportError:
        abn = None
    on_gpu = device.type == "cuda"
    return Machine(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        device=torch.cuda.get_device_name(device) if on_gpu else "CPU",
        host=platform.node(),
        device_kind=device.type,
        processes=world,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        cuda=torch.version.cuda if on_gpu else None,
        cudnn=torch.backends.cudnn.version() if on_gpu else None,
        inplace_abn=abn,
    )


def _train_timings(cfg: Config, net: nn.Module, optimizer, scheduler, scaler, device: torch.device, rank: int,
                   world: int, warmup: int, iters: int) -> tuple[list[float], list[float]]:
    """(seconds per iteration, seconds of it spent waiting for the next batch) of ``iters`` timed iterations."""
    batches = iter(train_loader(cfg, rank=rank, world=world))
    net.train()
    steps, waits = [], []
    for i in range(warmup + iters):
        start = time.perf_counter()
        image, target, _ = next(batches)
        got = time.perf_counter()
        losses = forward_loss(net, image, target, cfg, device)
        optimizer_step(losses["total"], optimizer, scheduler, scaler)
        _sync(device)
        if i >= warmup:
            steps.append(time.perf_counter() - start)
            waits.append(got - start)
    return steps, waits


@torch.no_grad()
def eval_seconds(model: nn.Module, cfg: Config, setting: EvalConfig, device: torch.device, images: int) -> float:
    """Mean seconds per image of inference with ``setting`` (after one untimed image)."""
    dataset = eval_dataset(cfg, setting.split or cfg.data.val_split, with_labels=False)
    model.eval()
    dtype = next(model.parameters()).dtype
    times = []
    for n in range(images + 1):
        image = dataset[n % len(dataset)][0].unsqueeze(0).to(device, dtype)
        start = time.perf_counter()
        predict(model, image, setting, cfg.model.num_classes).argmax(1)
        _sync(device)
        if n:
            times.append(time.perf_counter() - start)
    return statistics.fmean(times)


def read_every_split(cfg: Config, evals: list[EvalConfig]) -> dict[str, int]:
    """Read one sample (image, and label where one is computed against) of every split the training and its
    evaluations use, as the job's node sees the dataset; returns split -> images. A missing or empty split
    fails here, in the preflight, not hours into a training."""
    splits = {s: True for s in cfg.data.train_splits}
    for setting in evals:
        split = setting.split or cfg.data.val_split
        server = cfg.data.dataset == "cityscapes" and split == "test"  # private labels: scored by the server
        splits[split] = splits.get(split, False) or not server
    images = {}
    for split, with_labels in splits.items():
        dataset = eval_dataset(cfg, split, with_labels=with_labels)
        dataset[0]  # decodes one image (and its label): a missing or unreadable file fails here
        images[split] = len(dataset)
    return images


def spread(steps: list[float]) -> tuple[IterationTimes, float]:
    """The timed iterations' figures (median, quartiles, extremes, each one) and their relative spread."""
    median = statistics.median(steps)
    q1, _, q3 = statistics.quantiles(steps, n=4) if len(steps) > 1 else [median, median, median]
    figures = IterationTimes(median=round(median, 4), q1=round(q1, 4), q3=round(q3, 4), min=round(min(steps), 4),
                             max=round(max(steps), 4), each=[round(s, 4) for s in steps])
    return figures, (q3 - q1) / median


def _checkpoint_seconds(cfg: Config, scratch: Path, model: nn.Module, optimizer, scheduler, scaler) -> float:
    """Seconds to write one checkpoint of this shape (into the scratch folder, deleted again)."""
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"checkpoint{os.getpid()}.pth"
    start = time.perf_counter()
    save_checkpoint(path, cfg, 0, model, optimizer, scheduler, scaler)
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def measure(cfg: Config, evals: list[EvalConfig], warmup: int | None = None, iters: int | None = None,
            eval_images: int | None = None, started: float | None = None,
            scratch: Path | None = None) -> Measurement | None:
    """Measure ``cfg``'s training speed and memory and the inference cost of each of ``evals``; returns the
    record (rank 0; None on other ranks). Defaults: 5 warm-up + 20 timed iterations and 5 images per
    inference setting on GPUs; 2 + 5 and 2 on CPUs. ``started``: when the job began (for the set-up time);
    ``scratch``: a folder where one checkpoint is written (and deleted) to time it."""
    started = time.perf_counter() if started is None else started
    dist_info, device = setup(cfg)
    on_gpu = device.type == "cuda"
    warmup = (5 if on_gpu else 2) if warmup is None else warmup
    iters = (20 if on_gpu else 5) if iters is None else iters
    eval_images = (5 if on_gpu else 2) if eval_images is None else eval_images
    if on_gpu:
        torch.backends.cudnn.benchmark = not cfg.train.deterministic
        torch.cuda.reset_peak_memory_stats(device)
    model, optimizer, scheduler, scaler = build_training(cfg, device)
    net = model
    if dist_info.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if on_gpu else None)
    net = compile_net(net, cfg.train.compile)
    setup_s = time.perf_counter() - started
    splits = read_every_split(cfg, evals)
    steps, waits = _train_timings(cfg, net, optimizer, scheduler, scaler, device, dist_info.rank, dist_info.world,
                                  warmup, iters)
    train_peak = _peak_bytes(device)
    ckpt_s = _checkpoint_seconds(cfg, scratch, model, optimizer, scheduler, scaler) if dist_info.main and scratch else 0.0
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    evaluations = {
        eval_key(setting): InferenceTiming(
            s_per_img=round(eval_seconds(model, cfg, setting, device, eval_images), 4), scales=list(setting.scales),
            flip=setting.flip, window=list(setting.window) if setting.window else None, split=setting.split,
            images=eval_images)
        for setting in evals}
    if not dist_info.main:
        return None
    s_per_it, relative = spread(steps)
    return Measurement(
        machine=facts(device, dist_info.world), warmup=warmup, iters=iters, s_per_it=s_per_it,
        spread=round(relative, 3), unstable=relative > UNSTABLE_SPREAD, splits=splits,
        imgs_per_s=round(cfg.data.batch_size * dist_info.world / s_per_it.median, 3),
        data_wait=round(sum(waits) / sum(steps), 4), peak_mem_gib=round(train_peak / GIB, 3),
        peak_mem_kind="GPU (torch.cuda.max_memory_allocated)" if on_gpu else "CPU (peak RSS of the process)",
        eval_peak_mem_gib=round(_peak_bytes(device) / GIB, 3) if on_gpu else None,
        setup_s=round(setup_s, 3), ckpt_s=round(ckpt_s, 3), eval=evaluations)

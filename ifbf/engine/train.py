"""Iteration-based training (section 4.1) with exact resume, and ``run(cfg, run_dir)`` which trains and
evaluates one run end to end.

Resume is exact on CPU with a fixed seed: the data stream is a function of the iteration
(``IterationSampler``), and the checkpoint carries model, optimizer, scheduler, scaler and RNG states.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ifbf.config import Config, TrainConfig, config_hash, to_dict
from ifbf.data.fast import to_device
from ifbf.data.loader import train_loader
from ifbf.engine.dist import DistInfo, barrier, init_distributed
from ifbf.engine.evaluate import evaluate_run
from ifbf.engine.precision import AMP_DTYPES, amp_dtype, autocast, compile_net
from ifbf.engine.rundir import RunDir
from ifbf.errors import IfbfError
from ifbf.losses import total_loss
from ifbf.models import IFBFNet, build_model


class TrainingDiverged(IfbfError):
    """The loss became NaN or infinite."""


class Interrupted(Exception):
    """SIGUSR2/SIGTERM arrived; the checkpoint was saved and the run can be resumed.

    ``handler`` is the handler that was installed for that signal before training started (under
    submitit: its preemption handler, which requeues the job); the job callable decides what to do.
    """

    def __init__(self, iteration: int, signum: int, handler: Any = None) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name} at iteration {iteration}; checkpoint saved")
        self.iteration, self.signum, self.handler = iteration, signum, handler


def param_groups(model: IFBFNet, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Two SGD groups: the aux head and fusion modules at ``lr_mult`` x lr (section 4.1), the rest at lr."""
    fast = {id(p) for m in model.lr_mult_modules() for p in m.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) not in fast], "lr": cfg.lr, "lr_mult": 1.0},
        {"params": [p for p in params if id(p) in fast], "lr": cfg.lr * cfg.lr_mult, "lr_mult": cfg.lr_mult},
    ]


def lr_factor(it: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_iters``, times poly decay (1 - it/iters)^power over the whole run."""
    warm = min(1.0, (it + 1) / cfg.warmup_iters) if cfg.warmup_iters else 1.0
    return warm * (1 - it / cfg.iters) ** cfg.poly_power


def build_optimizer(model: IFBFNet, cfg: TrainConfig) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
    return optimizer, scheduler


def resolve_device(cfg: Config, local_rank: int = 0) -> torch.device:
    want = cfg.runtime.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise IfbfError("runtime.device asks for CUDA but no GPU is visible here; use runtime.device=cpu")
    return torch.device(f"cuda:{local_rank}" if want == "cuda" else want)


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: Path, cfg: Config, it: int, model: nn.Module, optimizer, scheduler, scaler) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    state = {
        "iter": it,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": _rng_state(),
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, cfg: Config, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint gets the same message
        raise IfbfError(f"cannot read checkpoint {path}: {err}") from None
    if state.get("config_hash") != config_hash(cfg):
        raise IfbfError(
            f"refusing to resume {path}: it was trained with config hash {state.get('config_hash')}, "
            f"but this config has hash {config_hash(cfg)}. Use another run directory for a different config."
        )
    return state


def model_dtype(cfg: Config) -> torch.dtype:
    return torch.float64 if cfg.train.float64 else torch.float32


def model_from_checkpoint(cfg: Config, path: Path, device: torch.device) -> tuple[IFBFNet, dict[str, Any]]:
    """(model in eval mode with the checkpoint's weights, the checkpoint); refuses another config's file."""
    state = load_checkpoint(path, cfg, device)
    model = build_model(cfg.model).to(device, model_dtype(cfg))
    model.load_state_dict(state["model"])
    return model.eval(), state


class _StopSignal:
    """Turns signals into flags the loop checks between iterations (main thread only).

    SIGUSR2 (preemption or time limit) always stops the run after a checkpoint. SIGTERM stops it too when
    ``terminate_stops`` (a plain ``ifbf train``: kill, scancel); under submitit, where a preemption sends
    SIGTERM *before* USR2 and a cancel sends SIGTERM then SIGKILL, it only asks for a checkpoint now.
    """

    def __init__(self, terminate_stops: bool = True) -> None:
        self.terminate_stops = terminate_stops
        self.received: int | None = None  # a signal that stops the run
        self.save_requested = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        for sig in (signal.SIGUSR2, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave handlers alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGTERM and not self.terminate_stops:
            self.save_requested = True
        else:
            self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _autocast(cfg: TrainConfig, device: torch.device):
    return autocast(cfg.amp, device)  # bf16 on CUDA and CPU, fp16 on CUDA (engine/precision.py)


def train(cfg: Config, run_dir: RunDir, dist_info: DistInfo, device: torch.device, progress: bool = True,
          terminate_stops: bool = True) -> nn.Module:
    """Train to ``cfg.train.iters``, resuming from ``run_dir/checkpoint.pth`` when it exists."""
    t = cfg.train
    torch.manual_seed(t.seed)
    random.seed(t.seed)
    np.random.seed(t.seed)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if t.amp in AMP_DTYPES and amp_dtype(t.amp, device) is None and dist_info.main:
        print(f"note: train.amp={t.amp} applies on CUDA only; training in fp32 on {device}")

    if cfg.model.norm == "syncbn" and dist_info.world > 1 and device.type != "cuda":
        raise IfbfError("model.norm=syncbn needs GPUs (torch's SyncBatchNorm is CUDA-only); on CPU use "
                        "model.norm=inplace_abn_sync, which synchronises over gloo, or model.norm=bn")
    dtype = model_dtype(cfg)
    model = build_model(cfg.model).to(device, dtype)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, t)
    scaler = torch.amp.GradScaler("cuda", enabled=t.amp == "fp16" and device.type == "cuda")

    start = 0
    if run_dir.checkpoint.is_file():
        state = load_checkpoint(run_dir.checkpoint, cfg)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        start = state["iter"]
        if dist_info.main:
            run_dir.truncate_log(start)
            if start < t.iters:
                print(f"resuming {run_dir.path} from iteration {start}")
    if start >= t.iters:
        return model

    net = model
    if dist_info.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    net = compile_net(net, t.compile)
    loader = train_loader(cfg, start_iter=start, rank=dist_info.rank, world=dist_info.world)
    batches: Iterator = iter(loader)
    images_per_step = cfg.data.batch_size * dist_info.world

    def checkpoint(it: int) -> None:
        if dist_info.main:
            save_checkpoint(run_dir.checkpoint, cfg, it, model, optimizer, scheduler, scaler)
        barrier()

    net.train()
    bar = tqdm(range(start, t.iters), initial=start, total=t.iters, desc="train", unit="it",
               disable=None if progress and dist_info.main else True)
    tick, seen = time.perf_counter(), 0
    with _StopSignal(terminate_stops) as stop:
        for it in bar:
            image, target, _ = next(batches)
            image, target = to_device(image, target, device, dtype, cfg.data)  # data.fast_path: normalised here
            if t.channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            with _autocast(t, device):
                outputs = net(image)
            losses = total_loss(outputs, target, t)
            loss = losses["total"]
            if not math.isfinite(loss.item()):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at iteration {it + 1}; stopped. The last good checkpoint is kept at "
                    f"{run_dir.checkpoint} (lower train.lr, or use train.amp=none), and the run resumes from it"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            seen += images_per_step
            done = it + 1
            if dist_info.main and (done % cfg.runtime.log_every == 0 or done == t.iters):
                now = time.perf_counter()
                record = {"iter": done, **{f"loss_{k}": round(v.item(), 6) for k, v in losses.items()},
                          "lr": optimizer.param_groups[0]["lr"], "imgs_per_s": round(seen / (now - tick), 3)}
                run_dir.append_log(record)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{record['lr']:.2e}")
                tick, seen = now, 0
            if done % cfg.runtime.ckpt_every == 0 or done == t.iters:
                checkpoint(done)
            elif stop.save_requested:
                checkpoint(done)
            stop.save_requested = False
            if stop.received is not None:
                if done % cfg.runtime.ckpt_every and done != t.iters:
                    checkpoint(done)
                raise Interrupted(done, stop.received, stop.previous.get(stop.received))
    bar.close()
    return model


def run(cfg: Config, out: str | Path, progress: bool = True, terminate_stops: bool = True) -> dict:
    """Train (or resume) and evaluate one run; returns its metrics. A finished run is not retrained.
    ``terminate_stops``: whether SIGTERM stops the run (see ``_StopSignal``)."""
    run_dir = RunDir(out)
    device_kind = "cuda" if resolve_device(cfg).type == "cuda" else "cpu"
    dist_info = init_distributed(device_kind)
    device = resolve_device(cfg, dist_info.local_rank)
    if dist_info.main:
        run_dir.claim(cfg)
    barrier()
    if run_dir.finished(cfg) and run_dir.checkpoint.is_file():
        metrics = run_dir.metrics()
        if dist_info.main:
            print(f"{run_dir.path}: already finished (mIoU {100 * metrics['miou']:.2f}); nothing to do")
        return metrics
    if dist_info.main:
        run_dir.write_env(str(device), dist_info.world)
    started = time.perf_counter()
    model = train(cfg, run_dir, dist_info, device, progress, terminate_stops)
    result, dataset = evaluate_run(model, cfg, device, dist_info, progress)
    metrics = run_dir.record_evaluation(cfg, cfg.eval, result, main=True) if dist_info.main else {"miou": result["miou"]}
    barrier()
    if dist_info.main:
        minutes = (time.perf_counter() - started) / 60
        print(f"{run_dir.path}: {cfg.train.iters} iterations, mIoU {100 * result['miou']:.2f} on "
              f"{len(dataset)} {cfg.data.val_split} images ({minutes:.1f} min)")
    return metrics

"""Iteration-based training (section 4.1) with exact resume: the loop only (checkpoints live in
``engine.checkpoint``; ``engine.run`` trains and evaluates one run end to end).

Resume is exact on CPU with a fixed seed: the data stream is a function of the iteration
(``IterationSampler``), and the checkpoint carries model, optimizer, scheduler, scaler and RNG states.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ifbf.config import Config, TrainConfig
from ifbf.data.fast import to_device
from ifbf.data.loader import train_loader
from ifbf.engine.checkpoint import model_dtype, resume, save_checkpoint
from ifbf.engine.curves import Curves
from ifbf.engine.dist import DistInfo, barrier
from ifbf.engine.divergence import DivergenceWatch
from ifbf.engine.losses import NothingKept, total_loss
from ifbf.engine.precision import AMP_DTYPES, amp_dtype, autocast, compile_net
from ifbf.errors import IfbfError, TrainingDiverged  # noqa: F401 - TrainingDiverged: re-exported, callers catch it here
from ifbf.models import SegModel, build_model
from ifbf.store.rundir import RunDir, StepRecord


class Interrupted(Exception):
    """SIGUSR2/SIGTERM arrived; the checkpoint was saved and the run can be resumed.

    ``handler`` is the handler that was installed for that signal before training started (under
    submitit: its preemption handler, which requeues the job); the job callable decides what to do.
    """

    def __init__(self, iteration: int, signum: int, handler: Any = None) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name} at iteration {iteration}; checkpoint saved")
        self.iteration, self.signum, self.handler = iteration, signum, handler


def param_groups(model: SegModel, cfg: TrainConfig) -> list[dict[str, Any]]:
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


def build_optimizer(model: SegModel, cfg: TrainConfig) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
    return optimizer, scheduler


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


def build_training(cfg: Config, device: torch.device) -> tuple[SegModel, torch.optim.SGD,
                                                                 torch.optim.lr_scheduler.LambdaLR, torch.amp.GradScaler]:
    """A fresh model (dtype and memory format of ``cfg``) with its optimizer, scheduler and AMP scaler."""
    t = cfg.train
    model = build_model(cfg.model).to(device, model_dtype(cfg))
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, t)
    scaler = torch.amp.GradScaler("cuda", enabled=t.amp == "fp16" and device.type == "cuda")
    return model, optimizer, scheduler, scaler


def forward_loss(net: nn.Module, image: torch.Tensor, target: torch.Tensor, cfg: Config,
                 device: torch.device) -> dict[str, torch.Tensor]:
    """One batch to the device, forward (under AMP when asked) and the loss terms ("total" included)."""
    image, target = to_device(image, target, device, model_dtype(cfg), cfg.data)  # data.fast_path: normalised here
    if cfg.train.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    with _autocast(cfg.train, device):
        outputs = net(image)
    return total_loss(outputs, target, cfg.train)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.SGD, scheduler: torch.optim.lr_scheduler.LambdaLR,
                   scaler: torch.amp.GradScaler) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


def prepare(cfg: Config, device: torch.device, dist_info: DistInfo) -> None:
    """Seeds, determinism and the checks that need the device, before anything is built."""
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


@dataclass
class _State:
    """What a checkpoint holds of a training, beside the config."""

    model: SegModel
    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler


def train(cfg: Config, run_dir: RunDir, dist_info: DistInfo, device: torch.device, progress: bool = True,
          terminate_stops: bool = True) -> nn.Module:
    """Train to ``cfg.train.iters``, resuming from ``run_dir/checkpoint.pth`` when it exists."""
    prepare(cfg, device, dist_info)
    state = _State(*build_training(cfg, device))
    start = resume(run_dir, cfg, dist_info.main, state.model, state.optimizer, state.scheduler, state.scaler)
    watch = DivergenceWatch(cfg, run_dir, device, start)
    if start:
        watch.check_resumed(start, state.model)
    if start and dist_info.main:
        run_dir.truncate_log(start)  # lines a run that died after its last checkpoint wrote
        if start < cfg.train.iters:
            print(f"resuming {run_dir.path} from iteration {start}")
    if start < cfg.train.iters:
        _loop(cfg, run_dir, dist_info, device, state, watch, progress, terminate_stops)
    return state.model


class _StepLog:
    """One log.jsonl record every ``runtime.log_every`` iterations: the losses of that iteration, lr and the speed
    since the previous record, curve validations excluded. Reading the losses is the loop's only wait for the
    device besides the divergence watch, and both happen at log steps only (docs/performance.md)."""

    def __init__(self, cfg: Config, run_dir: RunDir, images_per_step: int) -> None:
        self.cfg, self.run_dir, self.images_per_step = cfg, run_dir, images_per_step
        self.tick, self.seen, self.paused = time.perf_counter(), 0, 0.0

    def due(self, done: int) -> bool:
        return done % self.cfg.runtime.log_every == 0 or done == self.cfg.train.iters

    def step(self, done: int, losses: dict[str, torch.Tensor], lr: float) -> StepRecord | None:
        self.seen += self.images_per_step
        if not self.due(done):
            return None
        now = time.perf_counter()
        step_s = now - self.tick - self.paused  # training time since the last record, validation excluded
        values = torch.stack([v.detach() for v in losses.values()]).tolist()  # the one read of the device
        record = StepRecord(done, {k: round(v, 6) for k, v in zip(losses, values)}, lr,
                            imgs_per_s=round(self.seen / step_s, 3), step_s=round(step_s, 3))
        self.run_dir.append_log(record)
        self.tick, self.seen, self.paused = now, 0, 0.0
        return record


def _loop(cfg: Config, run_dir: RunDir, dist_info: DistInfo, device: torch.device, state: _State,
          watch: DivergenceWatch, progress: bool, terminate_stops: bool) -> None:
    """Iterations ``watch.checked`` (where training starts) .. ``train.iters``: step, watch for divergence, log,
    validate for the curves, checkpoint (never a diverged model), obey signals."""
    start = watch.checked
    net: nn.Module = state.model
    if dist_info.world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    net = compile_net(net, cfg.train.compile)
    batches: Iterator = iter(train_loader(cfg, start_iter=start, rank=dist_info.rank, world=dist_info.world))
    log = _StepLog(cfg, run_dir, cfg.data.batch_size * dist_info.world)

    def checkpoint(it: int) -> None:
        watch.check(it, state.model)  # every rank
        if dist_info.main:
            save_checkpoint(run_dir.checkpoint, cfg, it, state.model, state.optimizer, state.scheduler, state.scaler)
        barrier()

    net.train()
    bar = tqdm(range(start, cfg.train.iters), initial=start, total=cfg.train.iters, desc="train", unit="it",
               disable=None if progress and dist_info.main else True)
    curves = Curves(cfg, run_dir, device, dist_info)
    with _StopSignal(terminate_stops) as stop:
        for it in bar:
            image, target, _ = next(batches)
            try:
                losses = forward_loss(net, image, target, cfg, device)
            except NothingKept as err:
                watch.fail(it + 1, str(err))
            watch.loss(it + 1, losses["total"])
            optimizer_step(losses["total"], state.optimizer, state.scheduler, state.scaler)
            if log.due(it + 1) or curves.due(it + 1):  # every rank; before the record: no NaN reaches log.jsonl
                watch.check(it + 1, state.model)
            record = log.step(it + 1, losses, state.optimizer.param_groups[0]["lr"]) if dist_info.main else None
            if record:
                curves.scalars(record)
                bar.set_postfix(loss=f"{record.losses['total']:.3f}", lr=f"{record.lr:.2e}")
            if curves.due(it + 1):
                log.paused += curves.validate(state.model, it + 1)
            _checkpoint_cadence(it + 1, cfg, stop, checkpoint)
    bar.close()
    curves.close()


def _checkpoint_cadence(done: int, cfg: Config, stop: _StopSignal, checkpoint: Any) -> None:
    """When a checkpoint is written: every ``runtime.ckpt_every`` iterations and at the end; at once when a
    signal asks for one (SIGTERM under submitit); and before stopping for a stopping signal (USR2, or SIGTERM
    of a plain ``ifbf train``), which then raises ``Interrupted``."""
    scheduled = done % cfg.runtime.ckpt_every == 0 or done == cfg.train.iters
    if scheduled or stop.save_requested:
        checkpoint(done)
    stop.save_requested = False
    if stop.received is not None:
        if not scheduled:
            checkpoint(done)
        raise Interrupted(done, stop.received, stop.previous.get(stop.received))

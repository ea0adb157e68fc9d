"""Curves while training: every ``runtime.val_every`` iterations a quick single-scale validation on a fixed
subset of the val split (the first ``runtime.val_images`` images), recorded in log.jsonl as
``{"iter", "val_miou", "val_s", "val_images"}``; optionally TensorBoard event files in ``run_dir/tensorboard``.
The curve is for watching a run only: it never selects a checkpoint (the paper reports the final one)."""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn

from ifbf.config import Config
from ifbf.data.loader import eval_dataset
from ifbf.engine.dist import DistInfo
from ifbf.engine.evaluate import evaluate
from ifbf.engine.metrics import iou_from_train_confusion, summary
from ifbf.store.rundir import RunDir, StepRecord, ValRecord

TENSORBOARD_DIR = "tensorboard"


class Curves:
    """What a training run records besides its losses: validation points and TensorBoard scalars."""

    def __init__(self, cfg: Config, run_dir: RunDir, device: torch.device, dist_info: DistInfo) -> None:
        self.cfg, self.run_dir, self.device, self.dist_info = cfg, run_dir, device, dist_info
        self.every = cfg.runtime.val_every
        self.subset: torch.utils.data.Subset | None = None
        self.writer = None
        if cfg.runtime.tensorboard and dist_info.main:
            try:  # optional package: torch.utils.tensorboard needs `tensorboard`
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("note: runtime.tensorboard=true, but the tensorboard package is not installed "
                      "(pip install 'ifbf[tb]'); no event files are written")
            else:
                self.writer = SummaryWriter(str(run_dir.path / TENSORBOARD_DIR))

    def due(self, iteration: int) -> bool:
        return self.every > 0 and iteration % self.every == 0

    def validate(self, model: nn.Module, iteration: int) -> float:
        """Single-scale mIoU of ``model`` on the fixed subset (every rank takes part); leaves it in train mode.
        Returns the seconds it took."""
        started = time.perf_counter()
        if self.subset is None:
            full = eval_dataset(self.cfg, self.cfg.data.val_split)
            self.subset = torch.utils.data.Subset(full, range(min(self.cfg.runtime.val_images, len(full))))
        setting = dataclasses.replace(self.cfg.eval, scales=(1.0,), flip=False)
        conf, _ = evaluate(model, self.subset, setting, self.cfg.model.num_classes, self.device, self.dist_info,
                           progress=False)
        model.train()
        miou = summary(iou_from_train_confusion(conf.numpy()))["miou"]
        seconds = time.perf_counter() - started
        if self.dist_info.main:
            self.run_dir.append_log(ValRecord(iteration, round(miou, 6), round(seconds, 3), len(self.subset)))
            if self.writer is not None:
                self.writer.add_scalar("val/miou", miou, iteration)
        return seconds

    def scalars(self, record: StepRecord) -> None:
        """TensorBoard scalars of one training log record (loss terms, learning rate, images/s)."""
        if self.writer is None:
            return
        scalars = {f"loss_{k}": v for k, v in record.losses.items()} | {"lr": record.lr, "imgs_per_s": record.imgs_per_s}
        for key, value in scalars.items():
            if value is not None:
                self.writer.add_scalar(f"train/{key}", value, record.iter)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

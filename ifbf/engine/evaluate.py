"""Inference (whole image, multi-scale + flip, sliding window) and the confusion matrix."""

from __future__ import annotations

import dataclasses
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ifbf.config import PAPER_MS_SCALES, Config, EvalConfig
from ifbf.data.cityscapes import CityscapesDataset
from ifbf.data.labels import IGNORE
from ifbf.data.loader import eval_dataset
from ifbf.engine.dist import DistInfo, all_reduce_sum
from ifbf.engine.metrics import iou_from_train_confusion, summary
from ifbf.errors import TrainingDiverged
from ifbf.store.rundir import PER_IMAGE_COUNTS, EvalResult, PerImage


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def window_logits(model: nn.Module, x: torch.Tensor, window: tuple[int, int], num_classes: int) -> torch.Tensor:
    """Sliding-window logits: windows of ``window`` at a stride of 2/3 of it, overlaps averaged.
    Inputs smaller than the window are padded (the padding is cropped off again)."""
    wh, ww = window
    h, w = x.shape[-2:]
    ph, pw = max(wh - h, 0), max(ww - w, 0)
    x = F.pad(x, (0, pw, 0, ph))
    H, W = x.shape[-2:]
    sh, sw = max(1, wh * 2 // 3), max(1, ww * 2 // 3)
    rows = list(range(0, H - wh + 1, sh)) or [0]
    cols = list(range(0, W - ww + 1, sw)) or [0]
    if rows[-1] != H - wh:
        rows.append(H - wh)
    if cols[-1] != W - ww:
        cols.append(W - ww)
    logits = x.new_zeros(x.shape[0], num_classes, H, W)
    count = x.new_zeros(1, 1, H, W)
    for r in rows:
        for c in cols:
            logits[..., r : r + wh, c : c + ww] += model(x[..., r : r + wh, c : c + ww])["out"]
            count[..., r : r + wh, c : c + ww] += 1
    return (logits / count)[..., :h, :w]


@torch.no_grad()
def predict(model: nn.Module, image: torch.Tensor, cfg: EvalConfig, num_classes: int) -> torch.Tensor:
    """Class probabilities (N, K, H, W), averaged over ``cfg.scales`` and, with ``cfg.flip``, mirror images."""
    size = image.shape[-2:]
    total = image.new_zeros(image.shape[0], num_classes, *size)
    for scale in cfg.scales:
        scaled = image if scale == 1.0 else _resize(image, (round(size[0] * scale), round(size[1] * scale)))
        for flip in (False, True) if cfg.flip else (False,):
            x = scaled.flip(-1) if flip else scaled
            logits = window_logits(model, x, cfg.window, num_classes) if cfg.window else model(x)["out"]
            logits = logits.flip(-1) if flip else logits
            total += torch.softmax(_resize(logits.float(), size), dim=1)
    return total / (len(cfg.scales) * (2 if cfg.flip else 1))


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """K x K counts (rows ground truth, columns prediction) over non-ignored pixels, on pred's device."""
    valid = target != IGNORE
    index = target[valid] * num_classes + pred[valid]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: CityscapesDataset,
    cfg: EvalConfig,
    num_classes: int,
    device: torch.device,
    dist_info: DistInfo = DistInfo(),
    progress: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Confusion matrix of ``model`` over ``dataset`` (one image at a time, each rank a shard, summed), and
    per image each of ``PER_IMAGE_COUNTS`` (name -> an ``[n_images, K]`` int64 tensor; e.g. the intersection
    and union pixel counts of each class: their sums over images are the confusion's)."""
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    counts = {name: torch.zeros(len(dataset), num_classes, dtype=torch.int64, device=device)
              for name in PER_IMAGE_COUNTS}
    dtype = next(model.parameters()).dtype
    nonfinite = torch.zeros((), dtype=torch.int64, device=device)  # images whose prediction is not finite
    indices = range(dist_info.rank, len(dataset), dist_info.world)
    bar = tqdm(indices, desc="evaluate", unit="img", disable=None if progress and dist_info.main else True, leave=False)
    for index in bar:
        image, target, _ = dataset[index]
        image, target = image.unsqueeze(0).to(device, dtype), target.unsqueeze(0).to(device)
        probs = predict(model, image, cfg, num_classes)
        nonfinite += (~torch.isfinite(probs)).any()  # on the device: no sync per image
        pred = probs.argmax(1)
        image_conf = confusion(pred, target, num_classes)
        conf += image_conf
        for name, count in PER_IMAGE_COUNTS.items():
            counts[name][index] = count(image_conf)
    if (bad := int(all_reduce_sum(nonfinite).item())):
        raise TrainingDiverged(f"the model's output is not finite on {bad} of {len(dataset)} images: its weights "
                               "diverged or overflow (a training that diverged; lower train.lr); nothing was recorded")
    return all_reduce_sum(conf).cpu(), {name: all_reduce_sum(c).cpu() for name, c in counts.items()}


def evaluate_run(model: nn.Module, cfg: Config, device: torch.device, dist_info: DistInfo = DistInfo(),
                 progress: bool = True) -> tuple[EvalResult, CityscapesDataset]:
    """Evaluate ``model`` with ``cfg.eval`` on its split: (its result, with the per-image counts in ``counts``,
    which ``RunDir.record_evaluation`` stores apart; the dataset)."""
    started = time.perf_counter()
    dataset = eval_dataset(cfg)
    conf, counts = evaluate(model, dataset, cfg.eval, cfg.model.num_classes, device, dist_info, progress)
    per_image = PerImage([s.name for s in dataset.samples], {k: v.numpy() for k, v in counts.items()})
    scores = summary(iou_from_train_confusion(conf.numpy()))
    result = EvalResult(scores["miou"], scores["iou"], confusion=conf.tolist(),
                        seconds=round(time.perf_counter() - started, 3), counts=per_image)
    return result, dataset


def with_inference(cfg: Config, scales: tuple[float, ...] | None = None, ms: bool = False, flip: bool = False,
                   window: tuple[int, int] | None = None, split: str | None = None) -> Config:
    """``cfg`` with another inference setting: explicit ``scales`` win over ``ms`` (the paper's scales);
    when none of scales/ms/flip/window is given, the config's own setting is kept."""
    e = cfg.eval
    if scales or ms or flip or window:
        e = dataclasses.replace(e, scales=tuple(scales) if scales else PAPER_MS_SCALES if ms else (1.0,), flip=flip,
                                window=tuple(window) if window else None)
    if split:
        e = dataclasses.replace(e, split=split)
    return dataclasses.replace(cfg, eval=e)

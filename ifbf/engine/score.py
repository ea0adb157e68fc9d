"""Scoring prediction PNGs (``ifbf score``): per-class IoU and mIoU of labelId prediction PNGs against Cityscapes gtFine.

Same numbers as cityscapesscripts' evalPixelLevelSemanticLabeling (same matching of prediction files,
same confusion rules; see ``ifbf.engine.metrics.cityscapes_iou``), computed with one ``np.bincount`` per image
in a process pool. This module imports neither torch nor torchvision, so the command starts fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ifbf.engine.metrics import cityscapes_iou, summary
from ifbf.errors import ScoreError

GT_SUFFIX = "_gtFine_labelIds.png"
MAX_LABEL_ID = 33  # cityscapesscripts evaluates label ids 0..33; any other predicted id is an error


def frame_key(filename: str) -> str | None:
    """``<city>_<seq>_<frame>`` from a Cityscapes-style file name, or None."""
    parts = filename.split("_")
    return "_".join(parts[:3]) if len(parts) >= 3 else None


def match_predictions(gt_files: list[Path], pred_dir: Path) -> list[tuple[Path, Path]]:
    """Pair each ground-truth file with the one prediction named ``<city>_<seq>_<frame>*.png`` under pred_dir
    (searched recursively, as cityscapesscripts does); a missing or ambiguous prediction is an error."""
    found: dict[str, list[Path]] = {}
    for root, _, files in os.walk(pred_dir):
        for name in files:
            if name.endswith(".png") and (key := frame_key(name)):
                found.setdefault(key, []).append(Path(root) / name)
    pairs = []
    for gt in gt_files:
        key = frame_key(gt.name)
        matches = found.get(key, [])
        if not matches:
            raise ScoreError(f"no prediction for {gt.name}: expected a file {key}*.png under {pred_dir}")
        if len(matches) > 1:
            raise ScoreError(f"several predictions for {key}: {', '.join(str(m) for m in sorted(matches)[:3])}")
        pairs.append((gt, matches[0]))
    return pairs


def _read(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img)
    except (OSError, ValueError, SyntaxError) as err:
        raise ScoreError(f"cannot read PNG {path}: {err}") from None


def pair_confusion(pair: tuple[Path, Path]) -> np.ndarray:
    """34 x 34 label-id confusion (rows ground truth, columns prediction) of one image, flattened."""
    gt_path, pred_path = pair
    gt, pred = _read(gt_path), _read(pred_path)
    if pred.ndim != 2 or pred.dtype != np.uint8:
        raise ScoreError(f"prediction {pred_path} is not a single-channel 8-bit labelId PNG ({pred.shape}, {pred.dtype})")
    if gt.shape != pred.shape:
        raise ScoreError(
            f"size mismatch: {pred_path} is {pred.shape[1]}x{pred.shape[0]}, its ground truth {gt_path} is "
            f"{gt.shape[1]}x{gt.shape[0]}"
        )
    for array, path, what in ((gt, gt_path, "ground truth"), (pred, pred_path, "prediction")):
        if array.max() > MAX_LABEL_ID:
            bad = np.unique(array[array > MAX_LABEL_ID]).tolist()
            hint = "" if what == "ground truth" else " (write labelIds, not trainIds or colours)"
            raise ScoreError(f"{what} {path} has label ids {bad} that Cityscapes does not evaluate{hint}")
    n = MAX_LABEL_ID + 1  # ids 0..33: the flat index fits in uint16 and the table stays in cache
    return np.bincount((gt.astype(np.uint16) * n + pred).ravel(), minlength=n * n)


def confusion_of(pairs: Iterable[tuple[Path, Path]], workers: int) -> np.ndarray:
    pairs = list(pairs)
    n = MAX_LABEL_ID + 1
    total = np.zeros(n * n, np.int64)
    if workers <= 1 or len(pairs) < 4:
        for pair in pairs:
            total += pair_confusion(pair)
    else:
        with ProcessPoolExecutor(workers) as pool:
            for counts in pool.map(pair_confusion, pairs, chunksize=max(1, len(pairs) // (8 * workers))):
                total += counts
    return total.reshape(n, n)


def score(gt_root: Path, split: str, pred_dir: Path, workers: int | None = None) -> dict:
    gt_dir = gt_root / "gtFine" / split
    if not gt_dir.is_dir():
        raise ScoreError(f"ground truth not found: {gt_dir} is missing (--gt is the Cityscapes root holding gtFine/)")
    if not pred_dir.is_dir():
        raise ScoreError(f"prediction folder not found: {pred_dir}")
    gt_files = sorted(gt_dir.glob(f"*/*{GT_SUFFIX}"))
    if not gt_files:
        raise ScoreError(f"no ground truth in {gt_dir}: nothing matches */*{GT_SUFFIX}")
    pairs = match_predictions(gt_files, pred_dir)
    conf = confusion_of(pairs, workers or os.cpu_count() or 1)
    return {**summary(cityscapes_iou(conf)), "images": len(pairs)}

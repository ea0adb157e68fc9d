"""The scores a table can show, from per-image pixel counts summed over any set of images (numpy only)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# The per-image pixel counts every evaluation stores (evaluations/<key>/per_image.npz), each a function of one
# image's K x K confusion matrix (rows ground truth, columns prediction; a numpy array or a torch tensor) giving
# one count per class. Summed over any set of images they give that set's confusion-based metrics (SCORES), so
# the bootstrap of the report resamples images without knowing what the metric is. A metric that needs another
# count adds it here: evaluation, the run store and the report take every entry.
PER_IMAGE_COUNTS: dict[str, Callable[[Any], Any]] = {
    "inter": lambda conf: conf.diagonal(),  # true positives
    "union": lambda conf: conf.sum(0) + conf.sum(1) - conf.diagonal(),  # tp + fp + fn
}


def iou(sums: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per-class IoU from summed counts ([..., K]): inter / union, NaN where the union is 0 (a class absent
    from ground truth and prediction is left out of the mean, as cityscapesscripts does)."""
    inter, union = np.asarray(sums["inter"], dtype=np.float64), np.asarray(sums["union"], dtype=np.float64)
    return np.divide(inter, union, out=np.full(union.shape, np.nan), where=union > 0)


def pixel_accuracy(sums: Mapping[str, np.ndarray]) -> np.ndarray:
    """The share of labelled pixels predicted right, one global figure ([..., 1]; NaN without pixels). From the
    IoU counts alone: every wrong pixel is a false negative of one class and a false positive of another, so
    over the N labelled pixels sum(union) = 2 N - sum(inter), and accuracy = 2 sum(inter) / (sum(union) +
    sum(inter))."""
    inter = np.asarray(sums["inter"], dtype=np.float64).sum(-1, keepdims=True)
    pixels = (np.asarray(sums["union"], dtype=np.float64).sum(-1, keepdims=True) + inter) / 2
    return np.divide(inter, pixels, out=np.full(pixels.shape, np.nan), where=pixels > 0)


# A metric from counts summed over images (fractions; NaN: undefined, left out of the mean): one value per class
# ([..., K]) whose mean over the classes is the figure a table shows, or a figure of all classes together
# ([..., 1], e.g. pixel accuracy), which is its own mean. The keys are what a table spec's ``metrics`` and
# ``paper`` entries name (experiments/<paper>/table<N>.yaml; a per-class table's figure is mIoU: ``TableSpec.scores``).
SCORES: dict[str, Callable[[Mapping[str, np.ndarray]], np.ndarray]] = {"miou": iou, "pixel_acc": pixel_accuracy}
LABELS = {"miou": "mIoU", "pixel_acc": "pixel accuracy"}  # how headers and axes name a score (else its key)


def score_label(metric: str) -> str:
    return LABELS.get(metric, str(metric))

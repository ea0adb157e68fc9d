"""IoU from confusion matrices (numpy only: ``ifbf score`` must start without torch).

Two flavours, both equal to what the Cityscapes evaluation reports for its evaluated classes:
- ``iou_from_train_confusion``: K x K confusion over trainIds (rows ground truth, columns prediction),
  ignore pixels already left out; used by ``ifbf evaluate`` and training.
- ``cityscapes_iou``: 34 x 34 confusion over label ids 0..33, with cityscapesscripts' exact rules
  (a false positive counts only where the ground truth is an evaluated class; a false negative counts
  every other prediction, void ones included); used by ``ifbf score``.
"""

from __future__ import annotations

import math

import numpy as np

from ifbf.data.labels import CLASS_NAMES, EVAL_LABELS


def _ratio(tp: float, denom: float) -> float:
    return float(tp) / denom if denom > 0 else math.nan


def iou_from_train_confusion(conf: np.ndarray) -> np.ndarray:
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    denom = conf.sum(0) + conf.sum(1) - tp
    return np.array([_ratio(t, d) for t, d in zip(tp, denom)])


def cityscapes_iou(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU (the evaluated classes, trainId order) from a label-id confusion matrix, as evalPixelLevelSemanticLabeling."""
    conf = conf.astype(np.int64)
    ids = [label.id for label in EVAL_LABELS]
    result = []
    for label_id in ids:
        tp = conf[label_id, label_id]
        others = [i for i in ids if i != label_id]
        fp = conf[others, label_id].sum()
        fn = conf[label_id, :].sum() - tp
        result.append(_ratio(tp, tp + fp + fn))
    return np.array(result)


def summary(iou: np.ndarray, names: tuple[str, ...] = CLASS_NAMES) -> dict:
    """``{"miou": float, "iou": {name: float or None}}``, IoUs in [0, 1]; classes that never occur
    (neither in ground truth nor prediction) are None and left out of the mean, as in cityscapesscripts."""
    valid = iou[~np.isnan(iou)]
    return {
        "miou": float(valid.mean()) if valid.size else math.nan,
        "iou": {name: (None if math.isnan(v) else float(v)) for name, v in zip(names, iou)},
    }

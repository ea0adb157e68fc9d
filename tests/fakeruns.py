"""Finished runs made by hand, for the tests of the report (test_report_file.py, test_faults.py,
test_adaptive.py, test_table_metrics.py) and of where runs are found (test_papers.py, test_status.py). An
evaluation starts from per-image confusion matrices, and its per-image counts are every entry of
``runtypes.PER_IMAGE_COUNTS`` computed from them as evaluation computes them: a new count needs no change here
nor in those tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ifbf.experiments import DEFAULT_PAPER, load_preset, load_table, results_of
from ifbf.orchestrate.plan import build_plan
from ifbf.store.rundir import PER_IMAGE_COUNTS, EvalResult, PerImage, RunDir


def confusions(iou: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-image K x K confusion matrices (rows ground truth, columns prediction), [n_images, K, K], with ``gt``
    ground-truth pixels per image and class ([n_images, K]) and class IoUs of about ``iou`` (fractions, same
    shape): a share q = 2 iou / (1 + iou) of a class's pixels is predicted right, the rest as the next class,
    so IoU = q / (2 - q) = iou where neighbouring classes are alike."""
    right = np.rint(gt * 2 * iou / (1 + iou)).astype(np.int64)
    k = gt.shape[1]
    classes = np.arange(k)
    conf = np.zeros((gt.shape[0], k, k), dtype=np.int64)
    conf[:, classes, classes] = right
    conf[:, classes, (classes + 1) % k] = gt - right
    return conf


def per_image_counts(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Every ``PER_IMAGE_COUNTS`` entry of each image of ``conf``: [n_images, K] int64 arrays."""
    return {name: np.stack([np.asarray(count(c)) for c in conf]).astype(np.int64)
            for name, count in PER_IMAGE_COUNTS.items()}


def pooled_iou(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU of the images together, from the summed confusion matrix (NaN: a class in neither ground
    truth nor prediction)."""
    total = conf.sum(0)
    inter = np.diag(total).astype(np.float64)
    union = total.sum(0) + total.sum(1) - inter
    return np.divide(inter, union, out=np.full(union.shape, np.nan), where=union > 0)


def finish_run(training, conf: np.ndarray | None, miou: float | None = None) -> RunDir:
    """``training`` (a plan's ``Training``) finished by hand: its config claimed and each of its evaluations in
    metrics.json with ``miou`` (a fraction; default: the mIoU of ``conf``) and, unless ``conf`` is None (a run
    evaluated before per-image counts were stored), the per-image counts of ``conf``. Logs, status and
    checkpoint are the caller's."""
    rd = RunDir(training.run_dir)
    rd.claim(training.cfg)
    value = float(np.nanmean(pooled_iou(conf))) if miou is None else miou
    counts = None if conf is None else PerImage([f"img{i}" for i in range(len(conf))], per_image_counts(conf))
    result = EvalResult(value, {}, counts=counts)
    for i, e in enumerate(training.evals):
        rd.record_evaluation(training.cfg, e, result, main=i == 0)
    return rd


def finish_smoke_table(results: Path, number: int, paper: str = DEFAULT_PAPER) -> int:
    """Every training of ``paper``'s Table ``number`` on its smoke preset finished by hand under the results folder
    ``results`` (another paper's in ``results/<paper>/``), each evaluation at mIoU 0.3 without per-image counts;
    returns how many trainings."""
    plan = build_plan([load_table(number, paper)], load_preset("smoke", paper), 1, results_of(results, paper))
    for training in plan.trainings.values():
        finish_run(training, None, 0.3)
        (training.run_dir / "checkpoint.pth").write_bytes(b"")
    return len(plan.trainings)

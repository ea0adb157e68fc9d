"""What a run is, in types: its state, its status record, an evaluation's result and per-image counts, and
what it cost. Plain data; ``ifbf.rundir`` reads and writes them (and decides a run's state: ``run_state``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np


class RunState(StrEnum):
    """What a run is doing, as ``rundir.run_state`` decides it (the status record holds submitted .. failed)."""

    TODO = "todo"  # nothing recorded, or a finished training still missing an evaluation
    SUBMITTED = "submitted"
    RUNNING = "running"
    REQUEUED = "requeued"  # preempted or timed out: waiting to resume from its checkpoint
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"  # recorded as submitted/running/requeued, but its process or job is gone

    @property
    def active(self) -> bool:
        """A process or scheduler job has it: do not submit it again."""
        return self in (RunState.SUBMITTED, RunState.RUNNING, RunState.REQUEUED)

    @property
    def to_run(self) -> bool:
        """Nobody has it and it is not finished: the next reproduce.py submits it (failed ones on request)."""
        return self in (RunState.TODO, RunState.STOPPED)


@dataclass(frozen=True)
class Status:
    """The run's status record: what the scheduler side knows of it (written by the job and the orchestrator)."""

    state: RunState
    time: float
    host: str | None = None
    pid: int | None = None  # the process to ask whether it lives (local: the job; debug: the orchestrator)
    executor: str | None = None  # name of the executor that submitted it (``orchestrate.jobs``)
    job_id: str | None = None
    log: str | None = None
    cpus: int | None = None
    threads: int | None = None
    workers: int | None = None
    iteration: int | None = None  # where a requeued job stopped
    error: str | None = None
    traceback: str | None = None

    CARRIED = ("executor", "log", "job_id", "cpus", "threads", "workers")  # kept across state changes

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Status:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "state": RunState(data["state"])})

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


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


# A metric's per-class value (fractions; NaN: undefined, left out of the mean) from counts summed over images;
# its mean over classes is the figure a table shows. Keyed by ``experiments.Metric`` values (a per-class
# table's figure is mIoU: ``TableSpec.headline``).
SCORES: dict[str, Callable[[Mapping[str, np.ndarray]], np.ndarray]] = {"miou": iou}


def per_image_problem(counts: Mapping[str, np.ndarray], n_names: int, required: Iterable[str] = ()) -> str | None:
    """What is wrong with per-image counts for ``n_names`` images (None: nothing): every name in ``required``
    present (on writing: every ``PER_IMAGE_COUNTS`` entry; a file written before a count existed still reads,
    and a metric that needs the count shows a dash), all [n_images, K] of one shape."""
    missing = [name for name in required if name not in counts]
    shapes = {name: tuple(a.shape) for name, a in counts.items()}
    if missing or len(set(shapes.values())) != 1 or any(len(v) != 2 or v[0] != n_names for v in shapes.values()):
        found = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        return f"{found or 'no counts'}{f' (missing {missing})' if missing else ''}, {n_names} names"
    return None


@dataclass(frozen=True)
class PerImage:
    """Per-image pixel counts of one evaluation: one [n_images, K] int64 array per ``PER_IMAGE_COUNTS`` entry
    (their column sums give its IoUs)."""

    names: list[str]
    counts: dict[str, np.ndarray]

    @property
    def inter(self) -> np.ndarray:
        return self.counts["inter"]

    @property
    def union(self) -> np.ndarray:
        return self.counts["union"]


@dataclass(frozen=True)
class EvalResult:
    """One evaluation of a run as metrics.json keeps it (IoUs as fractions; None: class absent)."""

    miou: float
    iou: dict[str, float | None]
    seconds: float | None = None  # how long it took (None: stored by an older version)
    per_image: str | None = None  # its per-image counts, relative to the run directory

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> EvalResult:
        return cls(entry["miou"], entry.get("iou", {}), entry.get("seconds"), entry.get("per_image"))


@dataclass(frozen=True)
class RunCost:
    """What a run took: seconds of training steps, of curve validations (log.jsonl) and of evaluations
    (metrics.json), on ``devices`` devices (GPUs, or CPUs of a CPU run). The one figure REPORT.md's compute
    line and ``--plan``'s "took" column show."""

    train_s: float
    val_s: float
    eval_s: float
    devices: int
    on_gpu: bool

    @property
    def seconds(self) -> float:
        return self.train_s + self.val_s + self.eval_s

    @property
    def device_hours(self) -> float:
        return self.seconds * self.devices / 3600

    @property
    def unit(self) -> str:
        return "GPU" if self.on_gpu else "CPU"

    @staticmethod
    def hours_text(device_hours: float, unit: str) -> str:
        """Device-hours as every report prints them (three significant digits: 0.00833 or 123)."""
        return f"{device_hours:.3g} {unit}-hours"

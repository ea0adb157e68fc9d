"""What a run is, in types: its state, its status record, an evaluation's result and per-image counts, and
what it cost. Plain data; ``ifbf.rundir`` reads and writes them (and decides a run's state: ``run_state``)."""

from __future__ import annotations

import dataclasses
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


@dataclass(frozen=True)
class PerImage:
    """Per-image pixel counts of one evaluation ([n_images, K] int64; their column sums give its IoUs)."""

    names: list[str]
    inter: np.ndarray
    union: np.ndarray


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

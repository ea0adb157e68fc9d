"""What a run is, in types: its state, its status record (and what an executor records of a submitted job),
an evaluation's result and per-image counts, a line of its log, what it ran on (env.json) and what it cost.
Plain frozen dataclasses: ``to_json`` gives what the file holds, ``from_json`` reads it back (files written by
older versions too) or raises ``ValueError`` naming the problem. ``ifbf.store.rundir`` reads and writes them
(and decides a run's state: ``run_state``); the preflight's record is in ``ifbf.store.preflight``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from ifbf.store.scores import LABELS, PER_IMAGE_COUNTS, SCORES, iou, pixel_accuracy, score_label  # noqa: F401


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
    def from_json(cls, data: dict[str, Any]) -> Status:
        """The status record from its JSON (``TypeError``, ``ValueError``, ``KeyError``: a field of another type)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"state"}
        fields = {k: v for k, v in data.items() if k in known}
        for name, value in fields.items():
            if value is not None and not _of_type(value, _STATUS_TYPES.get(name, str)):
                raise TypeError(f"{name} is {value!r}")
        return cls(**fields, state=RunState(data["state"]))

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Submission:
    """What the status record keeps of a submitted job (``Executor.record``): enough to find its log and ask
    whether it lives. Every field is written, None included (a SLURM job has no pid of this process)."""

    executor: str
    job_id: str
    log: str | None
    pid: int | None


_STATUS_TYPES: dict[str, type | tuple[type, ...]] = {  # a field not named here is a string
    "time": (int, float), "pid": int, "job_id": (str, int), "cpus": int, "threads": int, "workers": int,
    "iteration": int}


def _of_type(value: object, kind: type | tuple[type, ...]) -> bool:
    """``isinstance``, where a bool is no number (JSON's true is not a pid or a count)."""
    return isinstance(value, kind) and not isinstance(value, bool)


def is_number(value: object, finite: bool = True) -> bool:
    """A JSON number (not a bool), finite unless ``finite`` is False."""
    return _of_type(value, (int, float)) and (not finite or math.isfinite(value))


def _fraction(value: object) -> bool:
    return is_number(value) and 0.0 <= value <= 1.0


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

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> PerImage:
        """From per_image.npz's arrays ("names" and the counts); ``ValueError`` names what does not fit."""
        names = arrays["names"]
        if names.ndim != 1 or names.dtype.kind != "U":
            raise ValueError(f"names are {names.dtype} of shape {names.shape}, not a list of strings")
        counts = {k: a for k, a in arrays.items() if k != "names"}
        if bad := [k for k, a in counts.items() if a.dtype.kind not in "iu"]:
            raise ValueError(f"counts {bad} are not integers")
        if problem := per_image_problem(counts, len(names)):
            raise ValueError(f"{problem}: mismatch")
        return cls(names.tolist(), counts)

    @property
    def inter(self) -> np.ndarray:
        return self.counts["inter"]

    @property
    def union(self) -> np.ndarray:
        return self.counts["union"]


@dataclass(frozen=True)
class ServerScore:
    """Where a test-server result came from (``ifbf import-server-result``): the file, its sha256, when."""

    source: str
    file: str | None = None
    sha256: str | None = None
    imported: str | None = None  # ISO date
    extra: dict[str, float] = field(default_factory=dict)  # the server's figures beyond the class IoUs (iIoU, ...)


@dataclass(frozen=True)
class EvalResult:
    """One evaluation of a run as metrics.json keeps it (IoUs as fractions; None: class absent). ``counts``: its
    per-image counts in memory (``engine.evaluate``), which the store writes to per_image.npz, recording that
    file's path in ``per_image``; they never enter metrics.json."""

    miou: float
    iou: dict[str, float | None]
    confusion: list[list[int]] | None = None  # K x K, rows ground truth (None: a server result)
    seconds: float | None = None  # how long it took (None: stored by an older version)
    split: str | None = None  # named by `ifbf evaluate` and the server import
    per_image: str | None = None  # its per-image counts, relative to the run directory
    server: ServerScore | None = None  # scored by the Cityscapes test server
    counts: PerImage | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> EvalResult:
        """An entry of metrics.json (``ValueError``: it is not one, ``evaluation_problem``); its "eval" (the
        inference setting) is the store's."""
        if problem := evaluation_problem(entry):
            raise ValueError(problem)
        server = None if "source" not in entry else ServerScore(
            entry["source"], entry.get("file"), entry.get("sha256"), entry.get("imported"), entry.get("extra") or {})
        return cls(entry["miou"], entry.get("iou", {}), entry.get("confusion"), entry.get("seconds"),
                   entry.get("split"), entry.get("per_image"), server)

    def to_json(self) -> dict[str, Any]:
        entry = {"miou": self.miou, "iou": self.iou, "confusion": self.confusion, "seconds": self.seconds,
                 "split": self.split, **(dataclasses.asdict(self.server) if self.server else {}),
                 "per_image": self.per_image}
        return {k: v for k, v in entry.items() if v is not None}


def evaluation_problem(entry: object) -> str | None:
    """What makes an evaluation of metrics.json unusable (None: nothing): it must be an object whose "miou" is a
    number in [0, 1] (NaN is none), "iou" an object of such numbers (null: class absent), "seconds" a number."""
    if not isinstance(entry, dict):
        return f"an evaluation is a {type(entry).__name__}, not an object"
    if not _fraction(entry.get("miou")):
        return f'"miou" is {entry.get("miou")!r}, not a number in [0, 1]'
    iou = entry.get("iou", {})
    if not isinstance(iou, dict) or not all(v is None or _fraction(v) for v in iou.values()):
        return '"iou" is not an object of numbers in [0, 1] (or null)'
    if entry.get("seconds") is not None and not is_number(entry["seconds"]):
        return f'"seconds" is {entry["seconds"]!r}, not a number'
    for key in ("per_image", "split", "source"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            return f'"{key}" is {entry[key]!r}, not a {"path" if key == "per_image" else "name"}'
    return None


def metrics_problem(metrics: dict[str, Any]) -> str | None:
    """What makes metrics.json unusable (None: nothing): "evaluations" an object of evaluations (and the headline
    "miou"/"iou", when there, one too), "iters" a number of iterations, "exports" an object of paths."""
    evaluations = metrics.get("evaluations", {})
    if not isinstance(evaluations, dict):
        return '"evaluations" is not an object'
    if "iters" in metrics and not _of_type(metrics["iters"], int):
        return f'"iters" is {metrics["iters"]!r}, not a number of iterations'
    exports = metrics.get("exports", {})
    if not isinstance(exports, dict) or not all(isinstance(v, str) for v in exports.values()):
        return '"exports" is not an object of paths'
    headline = {k: metrics[k] for k in ("miou", "iou") if k in metrics}
    for key, entry in [*evaluations.items(), *([("headline", headline)] if headline else [])]:
        if problem := evaluation_problem(entry):
            return f"evaluation {key}: {problem}"
    return None


LOG_TIMES = ("step_s", "imgs_per_s", "val_s")  # summed into what a run took: finite, >= 0


def log_record_problem(record: dict[str, Any]) -> str | None:
    """What makes a line of log.jsonl unusable (None: nothing): "iter" a count, its losses, lr and val_miou
    numbers (a diverged loss may be NaN), its times finite numbers >= 0."""
    if not _of_type(record.get("iter"), int) or record["iter"] < 0:
        return f'"iter" is {record.get("iter")!r}, not an iteration'
    for key, value in record.items():
        if key in LOG_TIMES and not (is_number(value) and value >= 0):
            return f'"{key}" is {value!r}, not a time'
        if (key.startswith("loss_") or key in ("lr", "val_miou", "val_images")) and not is_number(value, finite=False):
            return f'"{key}" is {value!r}, not a number'
    return None


@dataclass(frozen=True)
class StepRecord:
    """A log step of log.jsonl (``runtime.log_every``): the loss terms of its iteration, the learning rate and
    the training time since the record before, curve validations excluded."""

    iter: int
    losses: dict[str, float]  # "total", "out", "aux": "loss_<name>" in the file
    lr: float | None = None
    imgs_per_s: float | None = None  # an older log's only timing
    step_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        rest = {"lr": self.lr, "imgs_per_s": self.imgs_per_s, "step_s": self.step_s}
        return {"iter": self.iter, **{f"loss_{k}": v for k, v in self.losses.items()},
                **{k: v for k, v in rest.items() if v is not None}}


@dataclass(frozen=True)
class ValRecord:
    """A curve validation of log.jsonl (``runtime.val_every``): single-scale mIoU on the first ``val_images``."""

    iter: int
    val_miou: float
    val_s: float | None = None
    val_images: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


LogRecord = StepRecord | ValRecord


def log_record_from_json(data: dict[str, Any]) -> LogRecord:
    """A line of log.jsonl (``ValueError``: ``log_record_problem``): a validation when it holds "val_miou"."""
    if problem := log_record_problem(data):
        raise ValueError(problem)
    if "val_miou" in data:
        return ValRecord(data["iter"], data["val_miou"], data.get("val_s"), data.get("val_images"))
    losses = {k.removeprefix("loss_"): v for k, v in data.items() if k.startswith("loss_")}
    return StepRecord(data["iter"], losses, data.get("lr"), data.get("imgs_per_s"), data.get("step_s"))


@dataclass(frozen=True)
class Environment:
    """env.json: what a run ran on (``ifbf.store.environment.capture``): code and package versions, the device
    and processes, the CUDA stack, the host, and the run's inputs. Any field may be None: absent on that
    machine, or not recorded by an older version."""

    git_commit: str | None = None
    git_dirty: bool | None = None
    ifbf: str | None = None
    python: str | None = None
    torch: str | None = None
    torchvision: str | None = None
    numpy: str | None = None
    inplace_abn: str | None = None
    device: str | None = None  # "cpu", "cuda:0", ...
    cuda_device: str | None = None
    world_size: int | None = None  # processes
    host: str | None = None
    cuda: str | None = None
    cudnn: int | None = None
    nccl: str | int | None = None
    driver: str | None = None
    gpus: str | None = None
    gpu_count: int | None = None
    weights: dict[str, Any] | None = None  # ``models.weights.weights_record``: entry, path, sha256
    dataset: dict[str, Any] | None = None  # root and its verified manifest's digest, partial, date

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Environment:
        """env.json's content (``ValueError``: ``env_problem``); keys this version does not know are left out."""
        if problem := env_problem(data):
            raise ValueError(problem)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def on_gpu(self) -> bool:
        return (self.device or "").startswith("cuda")


def env_problem(env: dict[str, Any]) -> str | None:
    """What makes env.json unusable for the cost of a run (None: nothing): "world_size" a count of processes,
    "device" a name."""
    if env.get("world_size") is not None and not (_of_type(env["world_size"], int) and env["world_size"] >= 1):
        return f'"world_size" is {env["world_size"]!r}, not a number of processes'
    if env.get("device") is not None and not isinstance(env["device"], str):
        return f'"device" is {env["device"]!r}, not a device name'
    return None


def logged_seconds(log: list[LogRecord], images_per_iter: int) -> float:
    """Training seconds implied by a log without step times: each record's iterations at its images/s."""
    seconds, previous = 0.0, 0
    for record in log:
        if isinstance(record, StepRecord) and record.imgs_per_s:
            seconds += (record.iter - previous) * images_per_iter / record.imgs_per_s
        previous = record.iter
    return seconds


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

"""The preflight's record of one compute shape, as results/<preset>/preflight.json keeps it: what
``engine.measure`` measured (``Measurement``), or why its job failed (``PreflightFailure``), each with the shape
and the table rows it was measured for. ``orchestrate.preflight`` writes and reads the file, ``orchestrate.estimate``
prices trainings with it. Plain frozen dataclasses, as ``ifbf.store.runtypes``: ``to_json`` gives the file's
object, ``preflight_from_json`` reads it back (a record of an older version or written by hand too) or raises
``ValueError`` naming what is missing."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ifbf.store.runtypes import is_number


@dataclass(frozen=True)
class Machine:
    """What a measurement ran on (``engine.measure.facts``)."""

    date: str  # "2026-11-30 11:00 UTC"
    device: str  # the GPU's name, or "CPU"
    host: str | None = None
    device_kind: str | None = None  # "cuda", "cpu"
    processes: int | None = None
    threads: int | None = None
    torch: str | None = None
    cuda: str | None = None
    cudnn: int | None = None
    inplace_abn: str | None = None


@dataclass(frozen=True)
class IterationTimes:
    """Seconds per training iteration over the timed iterations (``engine.measure.spread``)."""

    median: float
    q1: float | None = None
    q3: float | None = None
    min: float | None = None
    max: float | None = None
    each: list[float] | None = None


@dataclass(frozen=True)
class InferenceTiming:
    """Seconds per image of one inference setting (``eval_key``), over ``images`` images."""

    s_per_img: float
    scales: list[float] | None = None
    flip: bool | None = None
    window: list[int] | None = None
    split: str | None = None
    images: int | None = None


@dataclass(frozen=True)
class Measurement:
    """One compute shape measured: training speed and memory, set-up and checkpoint seconds, and the seconds per
    image of each inference setting (keyed by ``eval_key``)."""

    machine: Machine
    s_per_it: IterationTimes
    setup_s: float
    eval: dict[str, InferenceTiming]
    ckpt_s: float = 0.0
    warmup: int | None = None
    iters: int | None = None
    spread: float | None = None  # (q3 - q1) / median of the timed iterations
    unstable: bool = False  # the spread says another load shared the machine
    splits: dict[str, int] | None = None  # images of every split the trainings read (one sample read of each)
    imgs_per_s: float | None = None
    data_wait: float | None = None  # share of an iteration spent waiting for its batch
    peak_mem_gib: float | None = None
    peak_mem_kind: str | None = None
    eval_peak_mem_gib: float | None = None
    shape: dict[str, Any] | None = None  # what was measured (``orchestrate.preflight.shape_of``) ...
    rows: tuple[str, ...] = ()  # ... for which table rows
    trainings: int | None = None

    def to_json(self) -> dict[str, Any]:
        figures = {k: getattr(self, k) for k in ("warmup", "iters")} | {"s_per_it": dataclasses.asdict(self.s_per_it)}
        figures |= {k: getattr(self, k) for k in ("spread", "unstable", "splits", "imgs_per_s", "data_wait",
                                                  "peak_mem_gib", "peak_mem_kind", "eval_peak_mem_gib", "setup_s",
                                                  "ckpt_s")}
        return {**_placed(self), **dataclasses.asdict(self.machine), **figures,
                "eval": {key: dataclasses.asdict(timing) for key, timing in self.eval.items()}}


@dataclass(frozen=True)
class PreflightFailure:
    """A preflight job that failed: what it raised, the likely cause and its fix (``orchestrate.preflight.explain``)."""

    error: str
    cause: str
    fix: str
    shape: dict[str, Any] | None = None
    rows: tuple[str, ...] = ()
    trainings: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {**_placed(self), "error": self.error, "cause": self.cause, "fix": self.fix}


Preflight = Measurement | PreflightFailure  # one shape's entry of preflight.json


def _placed(record: Preflight) -> dict[str, Any]:
    """What was measured, for which rows (written first, as before these types existed; absent from a job's own)."""
    if record.shape is None:
        return {}
    return {"shape": record.shape, "rows": list(record.rows), "trainings": record.trainings}


def preflight_from_json(data: object) -> Preflight:
    """One shape's entry of preflight.json (``ValueError``: ``preflight_problem``)."""
    if problem := preflight_problem(data):
        raise ValueError(problem)
    assert isinstance(data, dict)
    placed = {"shape": data.get("shape"), "rows": tuple(data.get("rows") or ()), "trainings": data.get("trainings")}
    if "error" in data:
        return PreflightFailure(data["error"], data["cause"], data["fix"], **placed)
    machine = Machine(**_known(Machine, data))
    times = IterationTimes(**_known(IterationTimes, data["s_per_it"]))
    timings = {key: InferenceTiming(**_known(InferenceTiming, e)) for key, e in data["eval"].items()}
    figures = {k: v for k, v in _known(Measurement, data).items() if k not in (*NESTED, *placed)}
    return Measurement(machine, times, eval=timings, **figures, **placed)


NESTED = ("machine", "s_per_it", "eval")  # Measurement's fields that are objects of their own


def _known(kind: type, data: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``data`` that name a field of ``kind`` (with their values)."""
    names = {f.name for f in dataclasses.fields(kind)}
    return {k: v for k, v in data.items() if k in names}


def preflight_problem(record: object) -> str | None:
    """What makes a shape's record unusable for pricing (None: nothing): a failure needs its cause and fix, a
    measurement its set-up and iteration seconds, evaluation seconds per image, date and device."""
    if not isinstance(record, dict):
        return f"a {type(record).__name__}, not an object"
    if "error" in record:
        failure = all(isinstance(record.get(k), str) for k in ("error", "cause", "fix"))
        return None if failure else "a failure without cause and fix"
    s_per_it, evals = record.get("s_per_it"), record.get("eval")
    if not (is_number(record.get("setup_s")) and isinstance(s_per_it, dict) and is_number(s_per_it.get("median"))):
        return "no set-up and iteration seconds"
    if not isinstance(evals, dict) or not all(isinstance(e, dict) and is_number(e.get("s_per_img"))
                                              for e in evals.values()):
        return "evaluation seconds per image missing"
    if not (isinstance(record.get("date"), str) and isinstance(record.get("device"), str)):
        return "no date or device"
    if record.get("unstable") and not (is_number(record.get("spread")) and is_number(s_per_it.get("min"))
                                       and is_number(s_per_it.get("max"))):
        return "unstable without its spread"
    if "ckpt_s" in record and not is_number(record["ckpt_s"]):
        return "checkpoint seconds not a number"
    return None

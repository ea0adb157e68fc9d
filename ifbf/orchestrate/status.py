"""What the cluster is doing: one line per training (scheduler state, iteration / total, last loss, images/s,
ETA, log path) and a summary of the GPU- (or CPU-) hours spent and left.

Reads only (the run files, through the run store: scheduler-side status, log, env, config, metrics, and the
locks), never writes, and asks each scheduler that keeps accounts once for all its jobs (the executor's
``accounting``, which still knows jobs that its queue has forgotten: finished, failed, timed out, out of memory,
requeued); the jobs of the others are alive or not as their executor says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ifbf.errors import UnreadableRunFile
from ifbf.orchestrate.executors import Accounting, accounting, job_alive
from ifbf.store.rundir import (Alive, Environment, RunCost, RunDir, RunState, Status, StepRecord, Unreadable, read_status,
                               run_state)
from ifbf.store.runlock import DEFAULT_STALE_S

FINAL_BAD = {"timeout", "OOM", "failed", "cancelled"}
QUEUED = {"pending", "running", "requeued", "suspended"}  # the accounting's states of a job that still lives


@dataclass(frozen=True)
class Target:
    """A training to report on: its run directory, what it is called, and how many iterations it has."""

    run_dir: Path
    label: str
    total: int
    evals: frozenset[str] = frozenset()  # evaluation keys it needs to count as done (empty: any one)
    stale_s: float = DEFAULT_STALE_S  # runtime.lock_stale_s of its config
    run_hash: str | None = None  # its config hash, when known: metrics.json must be of it
    predicted_h: float | None = None  # device-hours preflight predicts for the whole run (--plan's figure)


@dataclass(frozen=True)
class Line:
    run_hash: str
    label: str
    state: str  # the run's state with the scheduler's overlay: "OOM", "pending", "running (requeued ×2)", ...
    run_state: RunState | Unreadable  # the run's state as plan and reproduce.py see it (``rundir.run_state``)
    iteration: int
    total: int
    loss: float | None
    imgs_per_s: float | None
    eta_s: float | None
    log: str | None
    spent_h: float  # device-hours so far (GPU-hours on GPUs, CPU-hours on CPUs)
    left_h: float | None  # device-hours to finish (None: unknown: never started and not measured)
    unit: str  # "GPU" or "CPU"


def collect(targets: list[Target], query: Accounting | None = None) -> list[Line]:
    """One line per target; the states of scheduled jobs come from one accounting query per scheduler that
    keeps accounts (``query``: a stand-in for each, in tests)."""
    statuses = {t.run_dir: _status(t.run_dir) for t in targets}
    known = accounting([s for s in statuses.values() if s], query)
    lines = []
    for t in targets:
        status = statuses[t.run_dir]
        records = known.get((status.executor, str(status.job_id)), []) if status else []
        try:
            lines.append(_line(t, status, records))
        except UnreadableRunFile as err:  # named on its line; the other runs are reported
            lines.append(Line(t.run_dir.name, f"{t.label}  ({err})", err.cell, Unreadable(err), 0, t.total, None,
                              None, None, None, 0.0, None, "CPU"))
    return lines


def _status(run_dir: Path) -> Status | None:
    """The status record, or None when it cannot be read (``run_state`` then names it on the run's line)."""
    try:
        return read_status(run_dir)
    except UnreadableRunFile:
        return None


def _line(target: Target, status: Status | None, records: list[dict]) -> Line:
    """The target's line (``UnreadableRunFile``: one of its files cannot be read; ``collect`` names it)."""
    rd = RunDir(target.run_dir)
    if records and records[-1]["state"] == "pending" and _trains(rd, status, target.stale_s):
        # an accounting may record a job's start late: pending while the job already holds the training lock
        records = [*records[:-1], {**records[-1], "state": "running"}]
    base = run_state(rd, target.total, target.evals, _alive(records), stale_s=target.stale_s,
                     run_hash=target.run_hash, check=True)  # every file read: a damaged one is named, done or not
    if isinstance(base, Unreadable):
        raise base.error
    log = rd.read_log()
    last = log[-1] if log else None
    step = last if isinstance(last, StepRecord) else None
    env = rd.env() or Environment()
    batch, world, on_gpu = _batch_size(rd), env.world_size or 1, env.on_gpu
    cost = rd.cost() or RunCost(0.0, 0.0, 0.0, world if on_gpu else int((status and status.cpus) or 1), on_gpu)
    state = _overlay(base, status, records)
    s_per_it = batch * world / step.imgs_per_s if step and step.imgs_per_s else None
    iteration = last.iter if last else 0
    left_s = (target.total - iteration) * s_per_it if s_per_it else None
    spent_s, devices = cost.seconds, cost.devices
    if records and any(r["elapsed_s"] for r in records):  # what the scheduler counted, set-up and queue included
        spent_s = sum(r["elapsed_s"] for r in records)
        devices = max(r["gpus"] for r in records) or (devices if on_gpu else max(r["cpus"] for r in records) or devices)
    return Line(
        run_hash=target.run_dir.name, label=target.label, state=state, run_state=base, iteration=iteration,
        total=target.total,
        loss=step.losses.get("total") if step else None, imgs_per_s=step.imgs_per_s if step else None,
        eta_s=left_s if state.startswith(("running", "requeued")) else None,
        log=progress_log(status and status.log, state) or (str(rd.log) if log else None),
        spent_h=spent_s * devices / 3600,
        left_h=0.0 if base is RunState.DONE else left_s * devices / 3600 if left_s is not None else target.predicted_h,
        unit="GPU" if on_gpu else "CPU",
    )


def progress_log(log: str | None, state: str) -> str | None:
    """The log that says what a run is doing: a submitit job prints its progress into ``*_log.out`` and its
    errors into ``*_log.err`` (the path recorded at submission), so the error log only once the job went wrong."""
    if log and log.endswith("_log.err") and state.split(" (")[0] not in FINAL_BAD:
        return log.removesuffix("err") + "out"
    return log


def _alive(records: list[dict]) -> Alive:
    """Liveness as the accounting last saw the job; a job it does not list (yet), or one of an executor
    without accounting: its executor's."""
    return (lambda status: records[-1]["state"] in QUEUED) if records else job_alive


def _overlay(base: RunState, status: Status | None, records: list[dict]) -> str:
    """The scheduler's overlay on the run's state: its accounting's view of the job (OOM, timeout, pending,
    requeues), while the run is not done."""
    if base is RunState.DONE:
        return str(base)
    if status is None and base is RunState.TODO:
        return "not submitted"
    state = records[-1]["state"] if records else base
    if state == "done":  # the job ended well but the run is not complete: what the run's state says
        state = base
    requeues = sum(r["state"] in ("requeued", "timeout") for r in records[:-1])
    if status and status.state is RunState.REQUEUED and not requeues:
        requeues = 1
    return f"{state} (requeued ×{requeues})" if requeues and state not in FINAL_BAD else str(state)


def _batch_size(rd: RunDir) -> int:
    try:
        return rd.config().data.batch_size
    except Exception:  # noqa: BLE001 - a run dir without config.yaml yet
        return 1


def run_targets(folders: list[tuple[str, Path]]) -> list[Target]:
    """Every run directory of each ``(label, runs folder)`` (``folders.run_folders``; for ``ifbf status``: no
    table needed), its line labelled with the folder's label."""
    targets = []
    for label, root in folders:
        for run_dir in sorted(p for p in root.glob("*") if p.is_dir()):
            try:
                total = RunDir(run_dir).config().train.iters
            except Exception:  # noqa: BLE001 - not a run directory (yet)
                continue
            targets.append(Target(run_dir, label, total, stale_s=RunDir(run_dir).config().runtime.lock_stale_s))
    return targets


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m" if minutes else f"{seconds:.0f}s"


def render(lines: list[Line]) -> str:
    """The table printed by --status / ifbf status, then the summary line."""
    rows = []
    for ln in lines:
        loss = f"{ln.loss:.3f}" if ln.loss is not None else "—"
        speed = f"{ln.imgs_per_s:.1f} img/s" if ln.imgs_per_s else "—"
        rows.append(f"  {ln.run_hash}  {ln.state:22s} {ln.iteration:>6d}/{ln.total:<6d} loss {loss:>7s}  "
                    f"{speed:>12s}  ETA {_duration(ln.eta_s):>6s}  {ln.label}  log: {ln.log or '—'}")
    unit = "GPU" if any(ln.unit == "GPU" for ln in lines) else "CPU"
    spent = sum(ln.spent_h for ln in lines)
    known = [ln.left_h for ln in lines if ln.left_h is not None]
    unknown = sum(ln.left_h is None for ln in lines)
    counts: dict[str, int] = {}
    for ln in lines:
        key = ln.state.split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    left = f"{sum(known):.2f} {unit}-hours left"
    if unknown:
        left += f" + {unknown} without a measured speed (see --plan)"
    summary = f"{len(lines)} training(s): {states}; {spent:.2f} {unit}-hours spent, {left}"
    return "\n".join([*rows, summary])


def _trains(rd: RunDir, status: Status | None, stale_s: float) -> bool:
    """Whether the job ``status`` records holds the run's live training lock (not another process of the run)."""
    owner = rd.train_lock(stale_s).held_by_other()
    return bool(owner and status and status.job_id and str(owner.job_id) == str(status.job_id))

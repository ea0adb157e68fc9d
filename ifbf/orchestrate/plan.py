"""What a table needs: its cells (row x seed), the trainings behind them (one per training-config hash,
shared across rows and tables), the inference settings each training must be evaluated with, and the
status of each training on disk (done / running / failed / todo)."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ifbf.config import Config, EvalConfig
from ifbf.errors import UnreadableRunFile

from ifbf.identity import config_hash, eval_key
from ifbf.experiments import Cell, Preset, TableSpec, table_cells
from ifbf.orchestrate.cluster import slurm_job_active
from ifbf.rundir import RESULTS, RunDir, read_status, runs_root


@dataclass
class Training:
    """One training run (identified by its config hash) and every inference setting asked of it."""

    cfg: Config  # the training config (its eval section is the first cell's)
    run_dir: Path
    evals: list[EvalConfig] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    unreadable: UnreadableRunFile | None = None  # set by ``status``: a run file that could not be read

    @property
    def run_hash(self) -> str:
        return config_hash(self.cfg)

    def evaluated(self) -> set[str]:
        """Eval keys done: evaluated, or (test split of Cityscapes) exported for the test server (none while
        metrics.json is unreadable: ``status`` names it)."""
        try:
            return RunDir(self.run_dir).handled()
        except UnreadableRunFile:
            return set()

    def status(self, stale_after_s: float = 0, mine: str | None = None) -> str:
        """done | running | failed | todo (a finished training missing an evaluation is todo; a training whose
        lock a live process holds is running; ``mine``: the token of a lock the caller holds itself), or
        "unreadable: <file>" (kept in ``unreadable``) when one of its run files cannot be read."""
        try:
            self.unreadable = None
            RunDir(self.run_dir).check()  # a damaged file is named even when the run is done
            return self._status(stale_after_s, mine)
        except UnreadableRunFile as err:
            self.unreadable = err
            return err.cell

    def _status(self, stale_after_s: float, mine: str | None) -> str:
        rd = RunDir(self.run_dir)
        if rd.finished(self.cfg) and {eval_key(e) for e in self.evals} <= self.evaluated():
            return "done"
        if self.locked(mine):
            return "running"
        status = read_status(self.run_dir)
        if status is None:
            return "todo"
        if status["state"] == "failed":
            return "failed"
        if status["state"] in ("running", "submitted", "requeued"):
            return "running" if _alive(status, stale_after_s) else "todo"
        return "todo"

    def locked(self, mine: str | None = None) -> bool:
        """Whether a live process (another orchestrator submitting it, or a trainer) holds one of its locks."""
        stale_s = self.cfg.runtime.lock_stale_s
        rd = RunDir(self.run_dir)
        for lock in (rd.submit_lock(stale_s), rd.train_lock(stale_s)):
            owner = lock.owner()
            if owner is not None and owner.get("token") != mine and lock.stale_reason(owner) is None:
                return True
        return False

    def log_path(self) -> str | None:
        try:
            status = read_status(self.run_dir) or {}
        except UnreadableRunFile:
            return None
        return status.get("log")


def _alive(status: dict, stale_after_s: float) -> bool:
    """A status written by a job that can still be working: a local pid that still exists, or a
    scheduler job (SLURM) that the scheduler still lists; without either, trust a recent timestamp."""
    if status.get("executor") == "slurm" and status.get("job_id"):
        return slurm_job_active(str(status["job_id"]))
    pid = status.get("pid")
    if status.get("host") == socket.gethostname() and pid:
        try:
            os.kill(int(pid), 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    return stale_after_s <= 0 or time.time() - status.get("time", 0) < stale_after_s


@dataclass
class Plan:
    preset: Preset
    tables: list[TableSpec]
    cells: list[Cell]
    trainings: dict[str, Training]

    def training_of(self, cell: Cell) -> Training:
        return self.trainings[cell.run_hash]


def build_plan(tables: list[TableSpec], preset: Preset, seeds: int, results: Path = RESULTS,
               extra: tuple[str, ...] = ()) -> Plan:
    cells: list[Cell] = []
    trainings: dict[str, Training] = {}
    for table in tables:
        for cell in table_cells(table, preset, seeds, extra):
            cells.append(cell)
            training = trainings.get(cell.run_hash)
            if training is None:
                training = trainings[cell.run_hash] = Training(cell.cfg, runs_root(preset.name, results) / cell.run_hash)
            training.cells.append(cell)
            if cell.eval_key not in {eval_key(e) for e in training.evals}:
                training.evals.append(cell.cfg.eval)
    return Plan(preset, tables, cells, trainings)


def with_main_eval(training: Training) -> Config:
    """The training's config with its first inference setting (evaluated at the end of training)."""
    return dataclasses.replace(training.cfg, eval=training.evals[0])

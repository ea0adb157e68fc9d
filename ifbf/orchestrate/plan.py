"""What a table needs: its cells (row x seed), the trainings behind them (one per training-config hash,
shared across rows and tables), the inference settings each training must be evaluated with, and the
state of each training on disk (``rundir.RunState``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ifbf.config import Config, EvalConfig
from ifbf.errors import UnreadableRunFile
from ifbf.identity import config_hash, eval_key
from ifbf.experiments import Cell, Preset, TableSpec, table_cells
from ifbf.orchestrate.executors import job_alive
from ifbf.store.rundir import RESULTS, Alive, RunDir, RunState, Unreadable, read_status, run_state, runs_root


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

    def status(self, mine: str | None = None, alive: Alive = job_alive) -> RunState | Unreadable:
        """The run's state (``rundir.run_state``): a finished training missing an evaluation is todo; ``mine``:
        the token of a lock the caller holds itself; ``alive``: the executors' liveness check. A run file that
        cannot be read, even of a done run, gives "unreadable: <file>" (the error kept in ``unreadable``)."""
        state = run_state(RunDir(self.run_dir), self.cfg.train.iters, {eval_key(e) for e in self.evals}, alive,
                          mine, self.cfg.runtime.lock_stale_s, self.run_hash, check=True)
        self.unreadable = state.error if isinstance(state, Unreadable) else None
        return state

    def label(self) -> str:
        """Every cell that reads this training, e.g. ``T4 OHEM + DA; T4 OHEM + DA + MS``."""
        return "; ".join(sorted({c.label for c in self.cells}))

    def log_path(self) -> str | None:
        try:
            status = read_status(self.run_dir)
        except UnreadableRunFile:
            return None
        return status.log if status else None


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

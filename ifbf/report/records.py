"""The one reader of run directories for reporting: stored results -> one DataFrame.

A cell (table row x seed) finds its run directory from its config hash (``results/<preset>/runs/<hash>``)
and its result from the evaluation key of its inference setting, so reporting needs neither the plan nor
the engine. Everything downstream (tables, figures) reads the frames built here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ifbf.experiments import Cell, Metric, Preset, TableSpec, table_cells
from ifbf.report.stats import Counts
from ifbf.rundir import EvalResult, RunDir, RunState, process_alive, result_key, run_state, runs_root, scored_by_server

RECORD_COLUMNS = ["table", "row", "seed", "run_hash", "eval_key", "run_dir", "cell", "server", Metric.MIOU, "iou",
                  "counts", "failed"]
COMPUTE_COLUMNS = ["run_hash", "unit", "devices", "train_s", "val_s", "eval_s", "seconds", "device_hours"]


def collect(tables: list[TableSpec], preset: Preset, seeds: int, results: Path, extra: tuple[str, ...] = (),
            read_results: bool = True) -> pd.DataFrame:
    """One record per cell (table, row, seed): where its run lives and, once evaluated, its mIoU and per-class
    IoU (fractions; NaN / empty while missing), its per-image counts (``stats.Counts``; None for a run
    evaluated before they were stored, or a test-server result), and whether a missing result's run failed.
    ``server``: the result comes from the Cityscapes test server (imported with ``ifbf import-server-result``).
    ``read_results=False`` lists the cells only."""
    root = runs_root(preset.name, results)
    records = []
    for table in tables:
        for cell in table_cells(table, preset, seeds, extra):
            run_dir = root / cell.run_hash
            result = _result(run_dir, cell) if read_results else None
            counts = _counts(run_dir, cell) if result else None
            records.append({
                "table": cell.table, "row": cell.row.name, "seed": cell.seed, "run_hash": cell.run_hash,
                "eval_key": cell.eval_key, "run_dir": run_dir, "cell": cell, "server": scored_by_server(cell.cfg),
                Metric.MIOU: result.miou if result else math.nan, "iou": result.iou if result else {},
                "failed": read_results and result is None and _state(run_dir, cell) is RunState.FAILED,
                "counts": counts,
            })
    return pd.DataFrame.from_records(records, columns=RECORD_COLUMNS)


def _state(run_dir: Path, cell: Cell) -> RunState:
    """The run's state (``rundir.run_state``; a recorded job on this host is alive while its process is)."""
    return run_state(RunDir(run_dir), cell.cfg.train.iters, {result_key(cell.cfg)}, process_alive,
                     stale_s=cell.cfg.runtime.lock_stale_s, run_hash=cell.run_hash)


def _result(run_dir: Path, cell: Cell) -> EvalResult | None:
    return RunDir(run_dir).evaluation(result_key(cell.cfg))


def _counts(run_dir: Path, cell: Cell) -> Counts | None:
    stored = RunDir(run_dir).per_image(result_key(cell.cfg))
    return None if stored is None else Counts(stored.inter, stored.union, tuple(stored.names))


def row_counts(records: pd.DataFrame, table: int) -> dict[str, list[Counts]]:
    """Row name -> the per-image counts of its seeds (in seed order; seeds without counts left out, rows
    without any left out): what ``stats`` and ``claims`` take."""
    rows: dict[str, list[Counts]] = {}
    mine = records[(records["table"] == table) & records["counts"].notna()].sort_values("seed", kind="stable")
    for rec in mine.itertuples():
        rows.setdefault(rec.row, []).append(rec.counts)
    return rows


def compute(records: pd.DataFrame) -> pd.DataFrame:
    """What each distinct run behind ``records`` took (``RunDir.cost``: training, curves and evaluations, the
    figure --plan shows as "took"). Columns: run_hash, unit ("GPU" or "CPU"), devices, train_s, val_s, eval_s,
    seconds, device_hours."""
    rows = []
    for run_hash, run_dir in dict(zip(records["run_hash"], records["run_dir"])).items():
        cost = RunDir(run_dir).cost() if (run_dir / "config.yaml").is_file() else None
        if cost is not None:
            rows.append({"run_hash": run_hash, "unit": cost.unit, "devices": cost.devices, "train_s": cost.train_s,
                         "val_s": cost.val_s, "eval_s": cost.eval_s, "seconds": cost.seconds,
                         "device_hours": cost.device_hours})
    return pd.DataFrame.from_records(rows, columns=COMPUTE_COLUMNS)


def _curves(records: pd.DataFrame, table: int, key: str) -> pd.DataFrame:
    """log.jsonl lines holding ``key`` of the runs behind a table: one record per line of each distinct run,
    labelled by the first cell that uses it."""
    curves = []
    seen: set[str] = set()
    for rec in records[records["table"] == table].itertuples():
        if rec.run_hash in seen:
            continue
        log = [r for r in RunDir(rec.run_dir).read_log() if key in r]
        if not log:
            continue
        seen.add(rec.run_hash)
        label = rec.row + (f" (seed {rec.seed})" if rec.seed else "")
        curves += [{"label": label, "iter": r["iter"], key: r[key]} for r in log]
    return pd.DataFrame.from_records(curves, columns=["label", "iter", key])


def losses(records: pd.DataFrame, table: int) -> pd.DataFrame:
    """Training-loss curves (log.jsonl) of the runs behind a table."""
    return _curves(records, table, "loss_total")


def val_curves(records: pd.DataFrame, table: int) -> pd.DataFrame:
    """Validation mIoU against iteration (log.jsonl lines written with ``runtime.val_every``)."""
    return _curves(records, table, "val_miou")

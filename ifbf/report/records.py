"""The one reader of run directories for reporting: stored results -> one DataFrame.

A cell (table row x seed) finds its run directory from its config hash (``results/<preset>/runs/<hash>``)
and its result from the evaluation key of its inference setting, so reporting needs neither the plan nor
the engine. Everything downstream (tables, figures) reads the frames built here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ifbf.experiments import Cell, Preset, TableSpec, table_cells
from ifbf.rundir import RunDir, read_status, result_key, runs_root, scored_by_server

RECORD_COLUMNS = ["table", "row", "seed", "run_hash", "eval_key", "run_dir", "cell", "server", "miou", "iou",
                  "failed"]


def collect(tables: list[TableSpec], preset: Preset, seeds: int, results: Path, extra: tuple[str, ...] = (),
            read_results: bool = True) -> pd.DataFrame:
    """One record per cell (table, row, seed): where its run lives and, once evaluated, its mIoU and per-class
    IoU (fractions; NaN / empty while missing), and whether a missing result's run failed. ``server``: the
    result comes from the Cityscapes test server (imported with ``ifbf import-server-result``).
    ``read_results=False`` lists the cells only."""
    root = runs_root(preset.name, results)
    records = []
    for table in tables:
        for cell in table_cells(table, preset, seeds, extra):
            run_dir = root / cell.run_hash
            result = _result(run_dir, cell) if read_results else None
            records.append({
                "table": cell.table, "row": cell.row.name, "seed": cell.seed, "run_hash": cell.run_hash,
                "eval_key": cell.eval_key, "run_dir": run_dir, "cell": cell, "server": scored_by_server(cell.cfg),
                "miou": result["miou"] if result else math.nan, "iou": result["iou"] if result else {},
                "failed": read_results and result is None and (read_status(run_dir) or {}).get("state") == "failed",
            })
    return pd.DataFrame.from_records(records, columns=RECORD_COLUMNS)


def _result(run_dir: Path, cell: Cell) -> dict | None:
    metrics = RunDir(run_dir).metrics() or {}
    return metrics.get("evaluations", {}).get(result_key(cell.cfg))


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

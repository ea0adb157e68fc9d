"""The one reader of run directories for reporting: stored results -> one DataFrame.

A cell (table row x seed) finds its run directory from its config hash (``results/<preset>/runs/<hash>``)
and its result from the evaluation key of its inference setting, so reporting needs neither the plan nor
the engine. Everything downstream (tables, figures) reads the frames built here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ifbf.errors import IfbfError, UnreadableRunFile
from ifbf.experiments import Cell, Metric, Preset, ReportPrior, TableSpec, class_names, table_cells
from ifbf.report.stats import Counts, SeedNoise, per_seed, pooled_noise
from ifbf.store.rundir import (SCORES, EvalResult, LogRecord, RunDir, RunState, StepRecord, Unreadable, ValRecord,
                               process_alive, result_key, run_state, runs_root, scored_by_server)

RECORD_COLUMNS = ["table", "row", "seed", "run_hash", "eval_key", "run_dir", "cell", "server", Metric.MIOU, "iou",
                  "counts", "failed", "unreadable"]
COMPUTE_COLUMNS = ["run_hash", "unit", "devices", "train_s", "val_s", "eval_s", "seconds", "device_hours"]


def collect(tables: list[TableSpec], preset: Preset, seeds: int, results: Path, extra: tuple[str, ...] = (),
            read_results: bool = True) -> pd.DataFrame:
    """One record per cell (table, row, seed): where its run lives and, once evaluated, its mIoU and per-class
    IoU (fractions; NaN / empty while missing), its per-image counts (``stats.Counts``; None for a run
    evaluated before they were stored, or a test-server result), and whether a missing result's run failed.
    ``server``: the result comes from the Cityscapes test server (imported with ``ifbf import-server-result``).
    ``read_results=False`` lists the cells only. ``unreadable``: the ``UnreadableRunFile`` of a run file that
    could not be read (None when all could); the cell is marked with it and the rest of the table goes on."""
    root = runs_root(preset.name, results)
    records = []
    for table in tables:
        for cell in table_cells(table, preset, seeds, extra):
            run_dir = root / cell.run_hash
            result, counts, failed, unreadable = _read(run_dir, cell) if read_results else (None, None, False, None)
            records.append({
                "table": cell.table, "row": cell.row.name, "seed": cell.seed, "run_hash": cell.run_hash,
                "eval_key": cell.eval_key, "run_dir": run_dir, "cell": cell, "server": scored_by_server(cell.cfg),
                Metric.MIOU: result.miou if result else math.nan, "iou": result.iou if result else {},
                "failed": failed, "counts": counts, "unreadable": unreadable,
            })
    frame = pd.DataFrame.from_records(records, columns=RECORD_COLUMNS)
    frame.attrs["report_prior"] = preset.report  # what the intervals assume where the runs cannot tell
    frame.attrs["classes"] = class_names(preset.paper)  # the dataset's, in the order of the stored counts
    return frame


def _read(run_dir: Path, cell: Cell) -> tuple[EvalResult | None, Counts | None, bool, UnreadableRunFile | None]:
    """(result, counts, whether a missing result's run failed, the first run file that could not be read)."""
    result = counts = None
    try:
        result = _result(run_dir, cell)
        counts = _counts(run_dir, cell) if result else None
    except UnreadableRunFile as err:
        return result, counts, False, err
    state = _state(run_dir, cell)  # every file of the run read: a damaged one marks its cells even when done
    if isinstance(state, Unreadable):
        return result, counts, False, state.error
    return result, counts, result is None and state is RunState.FAILED, None


def _state(run_dir: Path, cell: Cell) -> RunState | Unreadable:
    """The run's state (``rundir.run_state``; a recorded job on this host is alive while its process is)."""
    return run_state(RunDir(run_dir), cell.cfg.train.iters, {result_key(cell.cfg)}, process_alive,
                     stale_s=cell.cfg.runtime.lock_stale_s, run_hash=cell.run_hash, check=True)


def _result(run_dir: Path, cell: Cell) -> EvalResult | None:
    return RunDir(run_dir).evaluation(result_key(cell.cfg))


def _counts(run_dir: Path, cell: Cell) -> Counts | None:
    stored = RunDir(run_dir).per_image(result_key(cell.cfg))
    return None if stored is None else Counts(stored.counts, tuple(stored.names), seed=cell.seed)


def unreadable_lines(records: pd.DataFrame) -> list[str]:
    """One line per run file that could not be read ("<run dir>: unreadable <file>: <reason>"), once each."""
    errors = records["unreadable"] if "unreadable" in records.columns else []
    return list(dict.fromkeys(str(err) for err in errors if isinstance(err, UnreadableRunFile)))


def has_result(records: pd.DataFrame) -> pd.Series:
    """The cells with a result to report: an evaluation in metrics.json (its mIoU) or per-image counts (the
    source of every other metric), whichever metric a table asks of them."""
    return records[Metric.MIOU].notna() | records["counts"].notna()


def row_counts(records: pd.DataFrame, table: int, metric: str = Metric.MIOU) -> dict[str, list[Counts]]:
    """Row name -> the per-image counts of its seeds, in seed order, scored by ``metric``: what ``stats`` and
    ``claims`` take. A row is left out unless every seed with a result has counts, so the tables' intervals
    and the claims use the same seeds (those with a result), by seed id."""
    rows: dict[str, list[Counts]] = {}
    mine = records[(records["table"] == table) & has_result(records)].sort_values("seed", kind="stable")
    for row, seeds in mine.groupby("row", sort=False):
        if seeds["counts"].notna().all():
            rows[str(row)] = [c if c.metric == metric else replace(c, metric=str(metric)) for c in seeds["counts"]]
    return rows


def seed_noise(records: pd.DataFrame, metric: str = Metric.MIOU) -> SeedNoise:
    """The prior σ of ``metric`` (mIoU, a class's IoU, or another ``rundir.SCORES`` metric, points) between
    training seeds that every row and claim of the report starts from (``stats.posterior`` then adds its own
    seeds): the preset's ``report.seed_std`` with its df, or σ pooled over the report's rows with >= 2 seeds
    (rows sharing their trainings count once) where that is **larger** (kept at the preset's df: it was measured
    on other rows; a smaller pool never lowers a claim's σ, since rows differ, docs/verdicts.md). Without a
    preset prior the pool is the prior. One class: sqrt(classes) x the mIoU prior unless measured; another metric:
    the mIoU prior, as its source says."""
    prior: ReportPrior = records.attrs.get("report_prior", ReportPrior())
    groups, seen = [], set()
    done = records[has_result(records)].sort_values(["table", "seed"], kind="stable")
    for _, seeds in done.groupby(["table", "row"], sort=False):
        trainings = tuple(seeds["run_hash"])
        if trainings not in seen:
            seen.add(trainings)
            groups.append(seed_values(seeds, metric))
    groups = [[v for v in g if not math.isnan(v)] for g in groups]
    pooled = pooled_noise(groups, None)
    if metric == Metric.MIOU:
        return larger_prior(SeedNoise.prior_of(prior), pooled)
    if metric in SCORES and not pooled.measured:
        return replace(seed_noise(records), source=f"the mIoU prior, for {metric}: {prior.seed_std_source}")
    classes = len(records.attrs.get("classes", class_names()))
    base = seed_noise(records) if metric in SCORES else seed_noise(records).one_class(classes)
    return larger_prior(base, pooled)


def larger_prior(prior: SeedNoise, pooled: SeedNoise) -> SeedNoise:
    """The preset's prior, or the report's pooled σ where that is larger (at the prior's df, capped by
    ``stats.posterior`` anyway; σ_d scaled alike)."""
    if not pooled.measured or (prior.std is not None and prior.std >= (pooled.std or 0.0)):
        return prior
    scale = pooled.std / prior.std if prior.std else 1.0
    df = prior.df if prior.std is not None else pooled.df
    return SeedNoise(pooled.std, df, f"measured on this report's {pooled.rows} multi-seed rows ({pooled.df:g} df), "
                     "larger than the preset's prior", pooled.rows, None if prior.diff is None else prior.diff * scale)


def seed_values(seeds: pd.DataFrame, metric: str) -> list[float]:
    """Each record's value of ``metric`` in points (NaN where it has none): mIoU and a class's IoU as
    metrics.json stores them (a test-server result has no per-image counts), any other ``rundir.SCORES``
    metric from the per-image counts (NaN when a count it needs was not stored)."""
    if metric == Metric.MIOU:
        return [100 * m for m in seeds[Metric.MIOU]]
    if metric not in SCORES:  # a class: its IoU as metrics.json stores it
        return [math.nan if iou.get(metric) is None else 100 * iou[metric] for iou in seeds["iou"]]  # None: absent
    values = []
    for counts in seeds["counts"]:
        try:
            values.append(per_seed([replace(counts, metric=metric)])[0] if counts is not None else math.nan)
        except IfbfError:  # a count the metric needs was not stored for this run
            values.append(math.nan)
    return values


def compute(records: pd.DataFrame) -> pd.DataFrame:
    """What each distinct run behind ``records`` took (``RunDir.cost``: training, curves and evaluations, the
    figure --plan shows as "took"). Columns: run_hash, unit ("GPU" or "CPU"), devices, train_s, val_s, eval_s,
    seconds, device_hours."""
    rows = []
    for run_hash, run_dir in dict(zip(records["run_hash"], records["run_dir"])).items():
        try:
            cost = RunDir(run_dir).cost() if (run_dir / "config.yaml").is_file() else None
        except UnreadableRunFile:  # named by the table's cells (``collect``); its time is left out
            continue
        if cost is not None:
            rows.append({"run_hash": run_hash, "unit": cost.unit, "devices": cost.devices, "train_s": cost.train_s,
                         "val_s": cost.val_s, "eval_s": cost.eval_s, "seconds": cost.seconds,
                         "device_hours": cost.device_hours})
    return pd.DataFrame.from_records(rows, columns=COMPUTE_COLUMNS)


def _curves(records: pd.DataFrame, table: int, key: str, value: Callable[[LogRecord], float | None]) -> pd.DataFrame:
    """The log.jsonl lines of the runs behind a table that have a ``value`` (column ``key``): one record per line
    of each distinct run, labelled by the first cell that uses it."""
    curves = []
    seen: set[str] = set()
    for rec in records[records["table"] == table].itertuples():
        if rec.run_hash in seen:
            continue
        try:
            log = [(r.iter, v) for r in RunDir(rec.run_dir).read_log() if (v := value(r)) is not None]
        except UnreadableRunFile:  # named by the table's cells; no curve
            continue
        if not log:
            continue
        seen.add(rec.run_hash)
        label = rec.row + (f" (seed {rec.seed})" if rec.seed else "")
        curves += [{"label": label, "iter": it, key: v} for it, v in log]
    return pd.DataFrame.from_records(curves, columns=["label", "iter", key])


def losses(records: pd.DataFrame, table: int) -> pd.DataFrame:
    """Training-loss curves (log.jsonl) of the runs behind a table: the main output's loss, which rows with
    and without auxiliary heads (or with another weight λ) share; the total where a log has no other."""
    return _curves(records, table, "loss_out",
                   lambda r: r.losses.get("out", r.losses.get("total")) if isinstance(r, StepRecord) else None)


def val_curves(records: pd.DataFrame, table: int) -> pd.DataFrame:
    """Validation mIoU against iteration (log.jsonl lines written with ``runtime.val_every``)."""
    return _curves(records, table, "val_miou", lambda r: r.val_miou if isinstance(r, ValRecord) else None)

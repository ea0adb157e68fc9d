"""Papers as folders of experiment specs: ``experiments/<paper>/`` holds paper.yaml (its title, the label of
its rows, its dataset), base.yaml (its recipe), presets/ and table<N>.yaml.

A table spec lists rows; each row is a short override set on its paper's base.yaml (``overrides: null``
marks another method's row: the paper's values only) and the values the paper reports for it. The default
paper (``DEFAULT_PAPER``) keeps the names it had before there were several: its rows are "T2 ...", its
results lie in results/<preset>/; another paper's rows say its name ("DANet T1 ...") and its results lie in
results/<paper>/<preset>/.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ifbf.config import BASE_CONFIG, ConfigError, Config, load_config, read_yaml
from ifbf.data.labels import DATASET_CLASSES
from ifbf.errors import UnreadSwitch
from ifbf.experiments.prior import REPORT_KEYS, ReportPrior, _report_prior  # noqa: F401 - a preset's report:
from ifbf.identity import config_hash, eval_key
from ifbf.store.runtypes import SCORES

EXPERIMENTS = BASE_CONFIG.parent.parent
DEFAULT_PAPER = BASE_CONFIG.parent.name  # the paper whose base.yaml is the config default


@dataclass(frozen=True)
class Paper:
    """One paper's specs: ``experiments/<name>/`` (its paper.yaml says the rest)."""

    name: str  # the folder, and --paper's value
    title: str
    label: str  # how its rows are named beside another paper's ("DANet")
    dataset: str  # the dataset its tables evaluate on: its classes, in the engine's order
    folder: Path

    @property
    def base(self) -> Path:
        return self.folder / "base.yaml"

    @property
    def tables(self) -> tuple[int, ...]:
        """The numbers of its table specs (table<N>.yaml), ascending."""
        found = (re.fullmatch(r"table(\d+)\.yaml", p.name) for p in self.folder.glob("table*.yaml"))
        return tuple(sorted(int(m.group(1)) for m in found if m))

    @property
    def classes(self) -> tuple[str, ...]:
        return DATASET_CLASSES[self.dataset]

    @property
    def arch(self) -> str:
        """The ``model.arch`` its base.yaml builds (a row may override it)."""
        return load_config(self.base).model.arch


def papers() -> list[str]:
    """Every folder of experiments/ with a paper.yaml."""
    return sorted(p.parent.name for p in EXPERIMENTS.glob("*/paper.yaml"))


@functools.cache
def load_paper(name: str = DEFAULT_PAPER) -> Paper:
    if name not in papers():
        raise ConfigError(f"unknown paper {name!r} (known: {', '.join(papers())}; a paper is a folder of "
                          "experiments/ with a paper.yaml)")
    folder = EXPERIMENTS / name
    data = read_yaml(folder / "paper.yaml")
    try:
        paper = Paper(name, str(data["title"]), str(data["label"]), str(data["dataset"]), folder)
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{folder / 'paper.yaml'}: needs title, label and dataset ({err!r} missing)") from None
    if paper.dataset not in DATASET_CLASSES:
        raise ConfigError(f"{folder / 'paper.yaml'}: dataset {paper.dataset!r} is not one the data layer knows "
                          f"({', '.join(DATASET_CLASSES)})")
    if not paper.base.is_file() or not paper.tables:
        raise ConfigError(f"{folder}: a paper needs base.yaml and at least one table<N>.yaml")
    return paper


class Metric(StrEnum):
    """The figures every report knows by name. The value is the figure's key wherever it is stored (metrics.json,
    the records frame, the table specs' ``metrics`` and ``paper`` entries), so those files keep their names. A
    table's ``metrics`` lists any ``store.runtypes.SCORES`` key (mIoU, pixel accuracy, ...) or is per_class."""

    MIOU = "miou"  # mean IoU over the evaluated classes
    PER_CLASS = "per_class"  # each class's IoU, then the mean (Tables 1 and 6): a table of its own


@dataclass(frozen=True)
class RowSpec:
    name: str
    overrides: tuple[str, ...] | None  # None: a row of another method, nothing to run
    paper: dict[str, float]  # the table's metrics (SCORES keys) and, for per-class tables, class names -> %
    adds_to: str | None = None  # the row this one adds one ablation step to (its Δ figure: this − that)


@dataclass(frozen=True)
class ColumnSpec:
    """A table column that describes a row by one field of its resolved config."""

    header: str
    key: str  # dotted config field, e.g. "model.aspp"
    names: dict[str, str] = field(default_factory=dict)  # printed names of values
    true_unless: Any = None  # show a check mark unless the value equals this
    many: bool = False  # show a check mark when the value holds more than one element (None holds none)

    def value(self, cfg: Config) -> Any:
        value: Any = cfg
        for part in self.key.split("."):
            value = getattr(value, part)
        if self.many:
            return len(value or ()) > 1
        if self.true_unless is not None:
            unless = tuple(self.true_unless) if isinstance(self.true_unless, list) else self.true_unless
            return value != unless
        return self.names.get(value, value) if isinstance(value, str) else value


@dataclass(frozen=True)
class FigureSpec:
    """How a table is drawn, once per metric: ``bars`` (paper vs ours per row) or ``sweep`` (the metric against
    ``column``)."""

    kind: str = "bars"
    column: str = ""
    xlabel: str = ""
    log_x: bool = False
    file: str = ""  # file name part of a sweep figure: table<N>_<file>.{png,pdf}
    delta_to_best: bool = False  # sweep: each series drawn as mIoU − its own best, so paper and ours share an axis


@dataclass(frozen=True)
class TableSpec:
    number: int
    title: str
    metrics: tuple[str, ...]  # SCORES keys, a column (ours, its interval, the paper's) and figures each; or per_class
    split: str
    columns: tuple[ColumnSpec, ...]
    rows: tuple[RowSpec, ...]
    figure: FigureSpec | None = None  # None: no figure (per-class tables)
    classes: dict[str, str] = field(default_factory=dict)  # per-class tables: class name -> header, in order
    notes: dict[str, str] = field(default_factory=dict)  # preset name -> note printed under the table
    paper: str = DEFAULT_PAPER

    @property
    def caption(self) -> str:
        """"Table 2" (the default paper) or "DANet Table 1"."""
        return table_caption(self.number, self.paper)

    def runnable(self) -> list[RowSpec]:
        return [row for row in self.rows if row.overrides is not None]

    @property
    def per_class(self) -> bool:
        """Each class's IoU and their mean per row (``metrics: [per_class]``), not one column per metric."""
        return self.metrics == (Metric.PER_CLASS,)

    @property
    def scores(self) -> tuple[str, ...]:
        """The SCORES keys each row is given a value and an interval of (REPORT.md's table sections): the
        table's metrics, mIoU for a per-class table."""
        return (Metric.MIOU,) if self.per_class else self.metrics


def _check_steps(rows: tuple[RowSpec, ...], path: Path) -> None:
    """Each ``adds_to`` names another runnable row of the same table (an ablation step is between two runs)."""
    runnable = {r.name for r in rows if r.overrides is not None}
    for row in rows:
        if row.adds_to is not None and (row.adds_to not in runnable or row.adds_to == row.name
                                        or row.overrides is None):
            raise ConfigError(f"{path}: row {row.name!r}: adds_to {row.adds_to!r} must name another runnable row "
                              f"of this table ({', '.join(sorted(runnable - {row.name}))})")


def _metrics(data: dict, path: Path) -> tuple[str, ...]:
    """The spec's ``metrics``: known scores (``store.runtypes.SCORES``), each once, or per_class alone."""
    if "metric" in data:
        raise ConfigError(f"{path}: 'metric: {data['metric']}' is now a list: metrics: [{data['metric']}]")
    metrics = data.get("metrics")
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise ConfigError(f"{path}: 'metrics' lists what the table shows, e.g. metrics: [miou] (known: "
                          f"{', '.join([*SCORES, Metric.PER_CLASS])})")
    if unknown := [m for m in metrics if m not in SCORES and m != Metric.PER_CLASS]:
        raise ConfigError(f"{path}: metrics {unknown}: not a score of ifbf/store/runtypes.py SCORES "
                          f"({', '.join(SCORES)}) nor per_class")
    if len(set(metrics)) != len(metrics) or (Metric.PER_CLASS in metrics and len(metrics) > 1):
        raise ConfigError(f"{path}: metrics {metrics}: each metric once, and per_class alone (a table of classes)")
    return tuple(metrics)


def _check_paper(rows: tuple[RowSpec, ...], scores: tuple[str, ...], classes: dict[str, str], path: Path) -> None:
    """Each ``paper`` value names a figure the table shows: one of its scores, or a class of a per-class table."""
    for row in rows:
        if unknown := [k for k in row.paper if k not in scores and k not in classes]:
            raise ConfigError(f"{path}: row {row.name!r}: paper values {unknown} are for no column of this table "
                              f"(its metrics: {', '.join(scores)}{'; its classes' if classes else ''})")


def class_names(paper: str = DEFAULT_PAPER) -> tuple[str, ...]:
    """The evaluated classes of the paper's dataset, in the order of every per-class count the engine stores."""
    return load_paper(paper).classes


def table_caption(number: int, paper: str = DEFAULT_PAPER) -> str:
    return f"Table {number}" if paper == DEFAULT_PAPER else f"{load_paper(paper).label} Table {number}"


def table_path(number: int, paper: str = DEFAULT_PAPER) -> Path:
    return load_paper(paper).folder / f"table{number}.yaml"


def load_table(number: int, paper: str = DEFAULT_PAPER) -> TableSpec:
    known = load_paper(paper)
    if number not in known.tables:
        raise ConfigError(f"unknown table {number} of {known.label}: its tables are "
                          f"{', '.join(map(str, known.tables))}")
    path = table_path(number, paper)
    data = read_yaml(path)
    try:
        rows = tuple(
            RowSpec(
                name=str(r["name"]),
                overrides=None if r["overrides"] is None else tuple(str(o) for o in r["overrides"]),
                paper={str(k): float(v) for k, v in r["paper"].items()},
                adds_to=None if r.get("adds_to") is None else str(r["adds_to"]),
            )
            for r in data["rows"]
        )
        _check_steps(rows, path)
        table = TableSpec(
            number=number,
            title=str(data["title"]),
            metrics=_metrics(data, path),
            split=str(data.get("split", "val")),
            columns=tuple(ColumnSpec(**c) for c in data.get("columns", ())),
            rows=rows,
            figure=FigureSpec(**data["figure"]) if "figure" in data else None,
            classes={str(k): str(v) for k, v in data.get("classes", {}).items()},
            notes={str(k): str(v) for k, v in data.get("notes", {}).items()},
            paper=paper,
        )
        _check_paper(rows, table.scores, table.classes, path)
        return table
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ConfigError(f"{path}: malformed table spec ({err!r})") from None


@dataclass(frozen=True)
class Preset:
    """A preset is itself a set of overrides, applied before a row's own; ``backbone_map`` then swaps
    the row's backbone (the smoke preset keeps R50 and R101 rows apart as resnet18 and resnet34)."""

    name: str
    overrides: tuple[str, ...]
    backbone_map: dict[str, str]
    description: str = ""
    requires_weights: bool = False  # refuse to plan a row whose backbone has no ImageNet weights given
    report: ReportPrior = field(default_factory=lambda: ReportPrior())
    paper: str = DEFAULT_PAPER  # whose base.yaml the rows resolve on
    absolute: bool = False  # its absolute numbers can be held against the paper's (the paper's own recipe)
    # the images of one optimiser step over all processes that the recipe trains with (processes x
    # data.batch_size); None: any. A profile with another number of processes would change it silently.
    global_batch: int | None = None
    global_batch_source: str = ""

    @property
    def base(self) -> Path:
        return load_paper(self.paper).base


def presets(paper: str = DEFAULT_PAPER) -> list[str]:
    return sorted(p.stem for p in (load_paper(paper).folder / "presets").glob("*.yaml"))


def load_preset(name: str, paper: str = DEFAULT_PAPER) -> Preset:
    """A preset by its name (``experiments/<paper>/presets/<name>.yaml``); a path, even one that leads to a YAML
    file, is no name: results/<preset>/ must stay inside the results folder."""
    if name not in presets(paper):
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(presets(paper))}; a preset is named, not a "
                          "path)")
    path = load_paper(paper).folder / "presets" / f"{name}.yaml"
    data = read_yaml(path)
    overrides, backbone_map = data.get("overrides", []), data.get("backbone_map", {})
    if not isinstance(overrides, list) or not isinstance(backbone_map, dict):
        raise ConfigError(f"{path}: expected 'overrides' (a list) and optionally 'backbone_map' (a mapping)")
    if "estimate" in data:
        raise ConfigError(f"{path}: 'estimate' is gone: --plan takes costs from measurements (reproduce.py --preflight)")
    batch = data.get("global_batch")
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise ConfigError(f"{path}: global_batch is a positive integer (processes x data.batch_size), not {batch!r}")
    return Preset(name, tuple(str(o) for o in overrides), {str(k): str(v) for k, v in backbone_map.items()},
                  str(data.get("description", "")), bool(data.get("requires_weights", False)),
                  _report_prior(data.get("report"), path), paper, data.get("absolute", False) is True,
                  batch, str(data.get("global_batch_source", "")).strip())


def row_config(row: RowSpec, preset: Preset, extra: tuple[str, ...] = ()) -> Config:
    """Resolved config of one table row: its paper's base.yaml + preset + the row's overrides (+ extra)."""
    assert row.overrides is not None, f"row {row.name!r} has nothing to run"
    cfg = _on_base(preset, [*preset.overrides, *row.overrides, *extra])
    if cfg.model.backbone in preset.backbone_map:
        cfg = _on_base(preset, [*preset.overrides, *row.overrides, *extra,
                                f"model.backbone={preset.backbone_map[cfg.model.backbone]}"])
    return cfg


def _on_base(preset: Preset, overrides: list[str]) -> Config:
    """``overrides`` on the preset's paper's base.yaml; a switch the row's arch does not read is refused naming
    the other papers whose specs build an arch that reads it ("IFBFNet's tables: --paper ifbfnet")."""
    try:
        return load_config(preset.base, overrides)
    except UnreadSwitch as err:
        builders = [f"{load_paper(p).label}'s tables: --paper {p}" for p in papers()
                    if p != preset.paper and load_paper(p).arch in err.readers]
        raise UnreadSwitch(f"{err}" + (f" ({'; '.join(builders)})" if builders else ""), err.readers) from None


def paper_flag(paper: str = DEFAULT_PAPER) -> str:
    """The ``--paper NAME `` a command needs to reach ``paper`` ("" for the default paper)."""
    return "" if paper == DEFAULT_PAPER else f"--paper {paper} "


def report_all_command(paper: str, preset: str) -> str:
    """The command that reports every table of ``paper`` on ``preset`` from the runs there are."""
    return f"python reproduce.py {paper_flag(paper)}--table all --preset {preset} --report-only"


def row_label(table: int, row: str, paper: str = DEFAULT_PAPER) -> str:
    """How a row is named outside its table (plans, preflight, checks): ``T3 + OHEM``; another paper's row
    says whose it is: ``DANet T1 + PAM``."""
    return f"T{table} {row}" if paper == DEFAULT_PAPER else f"{load_paper(paper).label} T{table} {row}"


@dataclass(frozen=True)
class Cell:
    """One row of one table at one seed, with its resolved config. Cells with the same ``run_hash`` share
    one training; ``eval_key`` names the inference setting the cell reads from it."""

    table: int
    row: RowSpec
    seed: int
    cfg: Config
    paper: str = DEFAULT_PAPER

    @property
    def run_hash(self) -> str:
        return config_hash(self.cfg)

    @property
    def eval_key(self) -> str:
        return eval_key(self.cfg.eval)

    @property
    def label(self) -> str:
        """The row's label, with the seed when not 0: ``T3 + OHEM s1``."""
        return row_label(self.table, self.row.name, self.paper) + (f" s{self.seed}" if self.seed else "")


@dataclass(frozen=True)
class RowSeeds:
    """Seeds per row where rows differ (``reproduce.py --seeds auto``): rows named in ``rows`` (by table number
    and row name) get that many seeds, the others ``default``. Seed s of a row is the same cell, with the same
    config hash, as under ``--seeds`` > s."""

    default: int = 1
    rows: tuple[tuple[int, str, int], ...] = ()  # (table, row name, seeds)

    def of(self, table: int, row: str) -> int:
        return next((n for t, r, n in self.rows if (t, r) == (table, row)), self.default)


def results_of(results: Path, paper: str = DEFAULT_PAPER) -> Path:
    """Where a paper's results lie under the results folder: the folder itself for the default paper (its
    results/<preset>/ as before), results/<paper>/ for another (so presets of the same name stay apart)."""
    return results if paper == DEFAULT_PAPER else results / paper


def results_above(folder: Path, paper: str = DEFAULT_PAPER) -> Path:
    """The results folder whose ``results_of(..., paper)`` is ``folder`` (what ``--results`` named)."""
    return folder if paper == DEFAULT_PAPER else folder.parent


def table_cells(table: TableSpec, preset: Preset, seeds: int | RowSeeds, extra: tuple[str, ...] = ()) -> list[Cell]:
    """Every runnable row of ``table`` at seeds 0..seeds-1 (the plan and the reports enumerate the same)."""
    if table.paper != preset.paper:
        raise ConfigError(f"preset {preset.name!r} is {preset.paper}'s, table {table.number} is {table.paper}'s")
    return [
        Cell(table.number, row, seed, row_config(row, preset, (*extra, f"train.seed={seed}")), table.paper)
        for row in table.runnable()
        for seed in range(seeds if isinstance(seeds, int) else seeds.of(table.number, row.name))
    ]

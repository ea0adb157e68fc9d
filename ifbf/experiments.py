"""The paper's tables as experiment specs (experiments/table<N>.yaml) and presets (experiments/presets/).

A table spec lists rows; each row is a short override set on experiments/base.yaml (``overrides: null``
marks another method's row: the paper's values only) and the values the paper reports for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ifbf.config import BASE_CONFIG, ConfigError, Config, load_config, read_yaml

EXPERIMENTS = BASE_CONFIG.parent
TABLES = (1, 2, 3, 4, 5, 6)


@dataclass(frozen=True)
class RowSpec:
    name: str
    overrides: tuple[str, ...] | None  # None: a row of another method, nothing to run
    paper: dict[str, float]  # "miou" and, for per-class tables, class names -> IoU in %


@dataclass(frozen=True)
class TableSpec:
    number: int
    title: str
    metric: str  # "miou" or "per_class"
    split: str
    columns: tuple[str, ...]
    rows: tuple[RowSpec, ...]

    def runnable(self) -> list[RowSpec]:
        return [row for row in self.rows if row.overrides is not None]


def table_path(number: int) -> Path:
    return EXPERIMENTS / f"table{number}.yaml"


def load_table(number: int) -> TableSpec:
    if number not in TABLES:
        raise ConfigError(f"unknown table {number}: the paper has tables {', '.join(map(str, TABLES))}")
    path = table_path(number)
    data = read_yaml(path)
    try:
        rows = tuple(
            RowSpec(
                name=str(r["name"]),
                overrides=None if r["overrides"] is None else tuple(str(o) for o in r["overrides"]),
                paper={str(k): float(v) for k, v in r["paper"].items()},
            )
            for r in data["rows"]
        )
        return TableSpec(
            number=number,
            title=str(data["title"]),
            metric=str(data["metric"]),
            split=str(data.get("split", "val")),
            columns=tuple(data.get("columns", ())),
            rows=rows,
        )
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ConfigError(f"{path}: malformed table spec ({err!r})") from None


@dataclass(frozen=True)
class Preset:
    """A preset is itself a set of overrides, applied before a row's own; ``backbone_map`` then swaps
    the row's backbone (the smoke preset keeps R50 and R101 rows apart as resnet18 and resnet34)."""

    name: str
    overrides: tuple[str, ...]
    backbone_map: dict[str, str]
    estimate: dict[str, float | str]  # seconds_per_iter, eval_seconds, gpus, basis (for --plan)
    description: str = ""


def presets() -> list[str]:
    return sorted(p.stem for p in (EXPERIMENTS / "presets").glob("*.yaml"))


def load_preset(name: str) -> Preset:
    path = EXPERIMENTS / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(presets())})")
    data = read_yaml(path)
    overrides, backbone_map = data.get("overrides", []), data.get("backbone_map", {})
    if not isinstance(overrides, list) or not isinstance(backbone_map, dict):
        raise ConfigError(f"{path}: expected 'overrides' (a list) and optionally 'backbone_map' (a mapping)")
    estimate = data.get("estimate", {})
    return Preset(name, tuple(str(o) for o in overrides), {str(k): str(v) for k, v in backbone_map.items()}, estimate,
                  str(data.get("description", "")))


def row_config(row: RowSpec, preset: Preset, extra: tuple[str, ...] = ()) -> Config:
    """Resolved config of one table row: base.yaml + preset + the row's overrides (+ extra)."""
    assert row.overrides is not None, f"row {row.name!r} has nothing to run"
    cfg = load_config(BASE_CONFIG, [*preset.overrides, *row.overrides, *extra])
    if cfg.model.backbone in preset.backbone_map:
        cfg = load_config(BASE_CONFIG, [*preset.overrides, *row.overrides, *extra,
                                        f"model.backbone={preset.backbone_map[cfg.model.backbone]}"])
    return cfg

"""Tables from the records frame (``report.records``): ``table_frame`` builds one numeric frame per table and
metric (``table_frames``: each metric the table lists); markdown, LaTeX and CSV are three renderings of them,
the metrics side by side. What a table shows (metrics, columns, per-class headers, notes) is data in its spec
(experiments/<paper>/table<N>.yaml)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ifbf.errors import IfbfError, UnreadableRunFile
from ifbf.experiments import Metric, RowSpec, TableSpec
from ifbf.identity import weights_status
from ifbf.report.records import has_result, row_counts, seed_noise, seed_values
from ifbf.report.report_md import interval_cell
from ifbf.report.stats import Counts, SeedNoise, row_interval
from ifbf.store.runtypes import score_label
from ifbf.store.safefile import atomic_write_text, make_dirs

CI = "95% CI"


def _interval(counts: list[Counts] | None, noise: SeedNoise) -> tuple[float, float]:
    """The row's 95% interval of its metric (images and training noise; ``stats``), or NaNs when it has no
    per-image counts (a run evaluated before they were stored), they do not pair up, or σ is unknown."""
    if not counts:
        return math.nan, math.nan
    try:
        interval = row_interval(counts, noise)
    except IfbfError:  # seeds evaluated on different images: no interval rather than a wrong one
        return math.nan, math.nan
    return interval.low, interval.high


def _scratch_mark(cells: pd.DataFrame) -> str:
    """" (from scratch)" for a row trained without ImageNet weights on purpose (``model.weights.<key>=none``)."""
    scratch = any(weights_status(cell.cfg.model) == "scratch" for cell in cells["cell"])
    return " (from scratch)" if scratch else ""


def table_frame(records: pd.DataFrame, table: TableSpec, metric: str | None = None) -> pd.DataFrame:
    """One numeric frame for ``table`` and one of its metrics (default: its first): a row per table row (its
    switches, paper value, ours mean/std over seeds, the 95% interval ``ci_low``/``ci_high`` of ours with images
    and training noise, Δ = ours − paper); a per-class table: its classes and their mean per row."""
    if table.per_class:
        return _per_class_frame(records, table)
    return metric_frame(records, table, table.rows, metric=metric or table.metrics[0])


def table_frames(records: pd.DataFrame, table: TableSpec) -> dict[str, pd.DataFrame]:
    """``table_frame`` of each metric the table lists, in the spec's order (a per-class table: its one frame)."""
    return {metric: table_frame(records, table, metric) for metric in table.metrics}


def metric_frame(records: pd.DataFrame, table: TableSpec, rows: tuple[RowSpec, ...] | list[RowSpec],
                 switches: bool = True, metric: str = Metric.MIOU) -> pd.DataFrame:
    """The frame of ``metric`` (a ``runtypes.SCORES`` key) for ``rows`` of ``table`` (``switches``: with the
    spec's columns); REPORT.md uses it for the runnable rows of every table, per-class ones included (mIoU)."""
    mine = records[records["table"] == table.number]
    counts = row_counts(records, table.number, metric)
    noise = seed_noise(records, metric)
    frame = []
    for row in rows:
        cells = mine[mine["row"] == row.name]
        values = [v for v in seed_values(cells, metric) if not math.isnan(v)]
        record: dict = {"row": row.name + _scratch_mark(cells)}
        if switches and len(cells):
            cfg = cells["cell"].iloc[0].cfg
            record.update({column.header: column.value(cfg) for column in table.columns})
        paper = row.paper.get(metric, math.nan)
        mean = float(np.mean(values)) if values else math.nan
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        low, high = _interval(counts.get(row.name), noise)  # only when every seed with a result has counts
        record.update({"paper": paper, "ours": mean, "std": std, "ci_low": low, "ci_high": high,
                       "seeds": len(values), "delta": mean - paper, "failed": int(cells["failed"].sum()),
                       "unreadable": unreadable_mark(cells)})
        frame.append(record)
    df = pd.DataFrame.from_records(frame).set_index("row")
    df.attrs.update(label=score_label(metric), metric=str(metric))  # headers, axis labels, figure files
    return df


def unreadable_mark(cells: pd.DataFrame) -> str:
    """"unreadable: metrics.json" (the files, once each) for cells whose run files could not be read; else ""."""
    errors = cells["unreadable"] if "unreadable" in cells.columns else []
    return ", ".join(dict.fromkeys(err.cell for err in errors if isinstance(err, UnreadableRunFile)))


def _per_class_frame(records: pd.DataFrame, table: TableSpec) -> pd.DataFrame:
    columns = [*table.classes, Metric.MIOU]
    frame = {row.name: [row.paper.get(c, math.nan) for c in columns] for row in table.rows}
    mine = records[records["table"] == table.number]
    for row in table.runnable():
        cells = mine[(mine["row"] == row.name) & has_result(mine)]
        results = list(zip(cells[Metric.MIOU], cells["iou"]))
        ours = [
            float(np.mean([100 * iou[c] for _, iou in results if iou.get(c) is not None] or [math.nan]))
            if c != Metric.MIOU else float(np.mean([100 * miou for miou, _ in results] or [math.nan]))
            for c in columns
        ]
        all_cells = mine[mine["row"] == row.name]
        seeds = f"{len(results)} seed{'s' if len(results) != 1 else ''}"
        if not results and len(all_cells) and all_cells["server"].all():
            seeds = "awaiting server result"
        mark = unreadable_mark(all_cells)
        label = f"{row.name}, ifbf ({seeds}{'; ' + mark if mark else ''}){_scratch_mark(all_cells)}"
        frame[label] = ours
        frame[f"Δ ({row.name}, ifbf − paper)"] = [o - p for o, p in zip(ours, frame[row.name])]
    df = pd.DataFrame.from_dict(frame, orient="index", columns=columns)
    df.index.name = "method"
    return df.rename(columns={**table.classes, Metric.MIOU: "Mean"})


def _fmt(value: object, signed: bool = False) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "✓" if value else ""
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "—"
        return f"{value:+.2f}" if signed else f"{value:.2f}"
    return str(value)


def _ours(mean: float, std: float, failed: int, unreadable: str = "") -> str:
    """"failed" when no seed has a value and a run failed; a note when some seeds failed; the unreadable run
    files ("unreadable: metrics.json") in place of, or beside, the value."""
    if math.isnan(mean):
        return unreadable or ("failed" if failed else "—")
    text = f"{mean:.2f} ± {std:.2f}" if not math.isnan(std) else f"{mean:.2f}"
    notes = [f"{failed} failed"] * bool(failed) + [unreadable] * bool(unreadable)
    return f"{text} ({'; '.join(notes)})" if notes else text


NUMERIC = ("paper", "ours", "std", "ci_low", "ci_high", "seeds", "delta", "failed", "unreadable")
SHARED = ("seeds", "failed", "unreadable")  # of a row, not of a metric: shown (or written) once


def _values(df: pd.DataFrame, latex: bool, named: bool) -> pd.DataFrame:
    """One metric's strings: the paper's value and Δ (where the paper gives any), ours (markdown: mean ± seed
    std and the ``95% CI`` column; LaTeX: ± half the 95% interval's width); ``named``: every header says the
    metric (several metrics side by side)."""
    label = df.attrs.get("label", "mIoU")
    tag = f" {label}" if named else ""
    failed = df["failed"] if "failed" in df.columns else [0] * len(df)
    unreadable = df["unreadable"] if "unreadable" in df.columns else [""] * len(df)
    out = pd.DataFrame(index=df.index)
    paper = bool(df["paper"].notna().any())  # no value from the paper: no paper column, no Δ
    if paper:
        out[f"paper {label}"] = [_fmt(v) for v in df["paper"]]
    if latex:
        out[f"ours {label} (± 95% CI)"] = [
            _ours(m, (hi - lo) / 2, int(f), u)
            for m, lo, hi, f, u in zip(df["ours"], df["ci_low"], df["ci_high"], failed, unreadable)
        ]
    else:
        out[f"ours {label}"] = [_ours(m, s, int(f), u) for m, s, f, u in zip(df["ours"], df["std"], failed, unreadable)]
        out[CI + tag] = [interval_cell(lo, hi) for lo, hi in zip(df["ci_low"], df["ci_high"])]
    if paper:
        out["Δ" + tag] = [_fmt(v, signed=True) for v in df["delta"]]
    return out


def display(df: pd.DataFrame, latex: bool = False) -> pd.DataFrame:
    """Strings for markdown/LaTeX: ✓ for switches, 2 decimals, — for missing. Markdown: ours as mean ± seed
    std and its ``95% CI`` column; LaTeX: ours ± half the 95% interval's width (mean alone without one)."""
    return display_all({"": df}, latex)


def display_all(frames: Mapping[str, pd.DataFrame], latex: bool = False) -> pd.DataFrame:
    """The frames of a table's metrics side by side (``table_frames``): the switches once, then each metric's
    columns (their headers name the metric where there are several), the seeds last."""
    first = next(iter(frames.values()))
    if "paper" not in first.columns:  # a per-class table: its matrix as it is
        return pd.DataFrame({col: [_fmt(v, signed=str(idx).startswith("Δ")) for idx, v in zip(first.index, first[col])]
                             for col in first.columns}, index=first.index)
    switches = pd.DataFrame({col: [_fmt(v) for v in first[col]] for col in first.columns if col not in NUMERIC},
                            index=first.index)
    seeds = pd.DataFrame({"seeds": [str(int(v)) for v in first["seeds"]]}, index=first.index)
    values = [_values(df, latex, named=len(frames) > 1) for df in frames.values()]
    return pd.concat([switches, *values, seeds], axis=1)


def csv_frame(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """A table's numeric frames as one: its first metric's as it is, each further metric's own columns suffixed
    with its key (``ours_pixel_acc``, ``ci_low_pixel_acc``)."""
    (_, out), *more = frames.items()
    for metric, df in more:
        own = [c for c in NUMERIC if c in df.columns and c not in SHARED]
        out = out.join(df[own].rename(columns=lambda c: f"{c}_{metric}"))
    return out


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("✓", r"\checkmark"), ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("λ", r"$\lambda$"), ("−", "--"),
                 ("—", "--")):
        text = text.replace(a, b)
    return text


def to_latex_document(frames: Mapping[str, pd.DataFrame], caption: str) -> str:
    """A compilable standalone LaTeX document (booktabs) holding the table (its metrics side by side)."""
    shown = display_all(frames, latex=True)
    shown.index = [_latex_escape(str(i)) for i in shown.index]
    shown.columns = [_latex_escape(str(c)) for c in shown.columns]
    shown = shown.map(lambda v: _latex_escape(str(v)))
    body = shown.to_latex(escape=False, column_format="l" + "c" * len(shown.columns))
    return (
        "\\documentclass{article}\n\\usepackage[margin=1cm,landscape]{geometry}\n\\usepackage{booktabs}\n"
        "\\usepackage{amssymb}\n\\usepackage{graphicx}\n\\usepackage[utf8]{inputenc}\n\\begin{document}\n"
        "\\begin{table}[h]\n\\centering\n"
        f"\\resizebox{{\\linewidth}}{{!}}{{%\n{body}}}\n\\caption{{{_latex_escape(caption)}}}\n\\end{{table}}\n"
        "\\end{document}\n"
    )


def write_table(frames: Mapping[str, pd.DataFrame], table: TableSpec, out: Path, note: str = "") -> list[Path]:
    """table<N>.md, .tex and .csv of the table's metrics (``table_frames``), each written atomically (a full or
    read-only disk keeps the previous one)."""
    stem = make_dirs(out) / f"table{table.number}"
    caption = f"{table.caption}: {table.title}"
    md = f"# {caption}\n\n{display_all(frames).to_markdown(disable_numparse=True)}\n"
    if note:
        md += f"\n{note}\n"
    paths = [stem.with_suffix(".md"), stem.with_suffix(".tex"), stem.with_suffix(".csv")]
    atomic_write_text(paths[0], md)
    explained = caption + (". Ours: mean over seeds ± half the width of its 95% interval (images, training noise)"
                           if "ci_low" in next(iter(frames.values())).columns else "")
    atomic_write_text(paths[1], to_latex_document(frames, explained))
    atomic_write_text(paths[2], csv_frame(frames).to_csv())
    return paths

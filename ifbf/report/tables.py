"""Tables from the records frame (``report.records``): ``table_frame`` builds one numeric frame per table;
markdown, LaTeX and CSV are three renderings of it. What a table shows (columns, per-class headers, notes) is
data in its spec (experiments/table<N>.yaml)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ifbf.errors import IfbfError, UnreadableRunFile
from ifbf.experiments import Metric, RowSpec, TableSpec
from ifbf.identity import weights_status
from ifbf.report.records import row_counts, seed_noise, seed_values
from ifbf.report.report_md import interval_cell
from ifbf.report.stats import Counts, SeedNoise, row_interval
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


def table_frame(records: pd.DataFrame, table: TableSpec) -> pd.DataFrame:
    """One numeric frame for ``table``: a row per table row (its switches, paper value, ours mean/std over
    seeds, the 95% interval ``ci_low``/``ci_high`` of ours with images and training noise, Δ = ours − paper)."""
    if table.metric is Metric.PER_CLASS:
        return _per_class_frame(records, table)
    return metric_frame(records, table, table.rows, metric=table.headline)


def metric_frame(records: pd.DataFrame, table: TableSpec, rows: tuple[RowSpec, ...] | list[RowSpec],
                 switches: bool = True, metric: str = Metric.MIOU) -> pd.DataFrame:
    """The frame of ``metric`` (mIoU unless the table names another) for ``rows`` of ``table`` (``switches``:
    with the spec's columns); REPORT.md uses it for the runnable rows of every table, per-class ones included."""
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
    df.attrs["label"] = metric.label if isinstance(metric, Metric) else str(metric)  # headers and axis labels
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
        cells = mine[(mine["row"] == row.name) & mine[Metric.MIOU].notna()]
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


def display(df: pd.DataFrame, latex: bool = False) -> pd.DataFrame:
    """Strings for markdown/LaTeX: ✓ for switches, 2 decimals, — for missing. Markdown: ours as mean ± seed
    std and its ``95% CI`` column; LaTeX: ours ± half the 95% interval's width (mean alone without one)."""
    out = pd.DataFrame(index=df.index)
    if "paper" in df.columns:  # a mIoU table
        failed = df["failed"] if "failed" in df.columns else [0] * len(df)
        unreadable = df["unreadable"] if "unreadable" in df.columns else [""] * len(df)
        for col in df.columns:
            if col not in NUMERIC:
                out[col] = [_fmt(v) for v in df[col]]
        label = df.attrs.get("label", "mIoU")
        out[f"paper {label}"] = [_fmt(v) for v in df["paper"]]
        if latex:
            out[f"ours {label} (± 95% CI)"] = [
                _ours(m, (hi - lo) / 2, int(f), u)
                for m, lo, hi, f, u in zip(df["ours"], df["ci_low"], df["ci_high"], failed, unreadable)
            ]
        else:
            out[f"ours {label}"] = [_ours(m, s, int(f), u)
                                    for m, s, f, u in zip(df["ours"], df["std"], failed, unreadable)]
            out[CI] = [interval_cell(lo, hi) for lo, hi in zip(df["ci_low"], df["ci_high"])]
        out["Δ"] = [_fmt(v, signed=True) for v in df["delta"]]
        out["seeds"] = [str(int(v)) for v in df["seeds"]]
        return out
    for col in df.columns:
        out[col] = [_fmt(v, signed=str(idx).startswith("Δ")) for idx, v in zip(df.index, df[col])]
    return out


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("✓", r"\checkmark"), ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("λ", r"$\lambda$"), ("−", "--"),
                 ("—", "--")):
        text = text.replace(a, b)
    return text


def to_latex_document(df: pd.DataFrame, caption: str) -> str:
    """A compilable standalone LaTeX document (booktabs) holding the table."""
    shown = display(df, latex=True)
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


def write_table(df: pd.DataFrame, table: TableSpec, out: Path, note: str = "") -> list[Path]:
    """table<N>.md, .tex and .csv, each written atomically (a full or read-only disk keeps the previous one)."""
    stem = make_dirs(out) / f"table{table.number}"
    caption = f"Table {table.number}: {table.title}"
    md = f"# {caption}\n\n{display(df).to_markdown(disable_numparse=True)}\n"
    if note:
        md += f"\n{note}\n"
    paths = [stem.with_suffix(".md"), stem.with_suffix(".tex"), stem.with_suffix(".csv")]
    atomic_write_text(paths[0], md)
    explained = caption + (". Ours: mean over seeds ± half the width of its 95% interval (images, training noise)"
                           if "ci_low" in df.columns else "")
    atomic_write_text(paths[1], to_latex_document(df, explained))
    atomic_write_text(paths[2], df.to_csv())
    return paths

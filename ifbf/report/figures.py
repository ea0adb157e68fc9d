"""Figures of a table, each one function writing PNG and PDF: paper vs ours per row (bars), each ablation
step's Δ (``table<N>_delta``, a forest plot of ``report.forest``), the metric against a swept value (sweep),
each of them once per metric the table lists (``figure_path``), the training-loss curves and the validation
curves of the runs behind a table; and every claim's forest plot (``claims``). Legends sit outside the axes,
so they never cover data."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ifbf.experiments import TableSpec  # noqa: E402
from ifbf.report.forest import ClaimLine, forest_figure, step_lines  # noqa: E402
from ifbf.report.records import losses, row_counts, seed_noise, val_curves  # noqa: E402
from ifbf.store.runtypes import score_label  # noqa: E402
from ifbf.store.safefile import atomic_write_bytes, make_dirs  # noqa: E402

CLAIMS = "claims"  # results/<preset>/claims.{png,pdf}


def _outside_legend(ax: plt.Axes, **kwargs) -> None:
    """The legend to the right of the axes: outside them, so it covers no bar, point or curve."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def _save(fig: plt.Figure, path: Path) -> list[Path]:
    """PNG and PDF, each rendered in memory and written atomically (a full or read-only disk keeps the old one)."""
    paths = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    try:
        for p in paths:
            buffer = io.BytesIO()
            fig.savefig(buffer, format=p.suffix[1:], dpi=150, bbox_inches="tight")
            atomic_write_bytes(make_dirs(p.parent) / p.name, buffer.getbuffer())
    finally:
        plt.close(fig)
    return paths


def figure_path(out: Path, table: TableSpec, name: str, metric: str | None = None) -> Path:
    """``out/table<N>_<name>`` for the table's first metric (mIoU); another metric's figure carries its key:
    ``table4_delta_pixel_acc``."""
    suffix = "" if metric is None or metric == table.scores[0] else f"_{metric}"
    return out / f"table{table.number}_{name}{suffix}"


def _error_bars(df: pd.DataFrame) -> np.ndarray:
    """(2 x rows) distances from ours down/up to its 95% interval; ± seed std where a row has no interval
    (runs evaluated before per-image counts were stored); 0 where neither exists."""
    ours = df["ours"].astype(float)
    low = df["ci_low"].astype(float) if "ci_low" in df else pd.Series(np.nan, index=df.index)
    high = df["ci_high"].astype(float) if "ci_high" in df else pd.Series(np.nan, index=df.index)
    std = df["std"].astype(float)
    down = (ours - low).where(low.notna(), std).fillna(0).clip(lower=0)
    up = (high - ours).where(high.notna(), std).fillna(0).clip(lower=0)
    return np.vstack([down.values, up.values])


def plot_ablation(df: pd.DataFrame, table: TableSpec, out: Path, preset: str) -> list[Path]:
    """Paper vs ours per row (bars; ours with its 95% interval, or ± seed std for rows without one)."""
    x = np.arange(len(df))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(df)), 4))
    ax.bar(x - 0.2, df["paper"], 0.4, label="paper", color="#9aa5b1")
    ax.bar(x + 0.2, df["ours"].fillna(0), 0.4, yerr=_error_bars(df), label=f"ifbf ({preset}, 95% CI)",
           color="#2f6fdb", capsize=3)
    ax.set_xticks(x, df.index, rotation=30, ha="right")
    ax.set_ylabel(f"{df.attrs.get('label', 'mIoU')} (%)")
    ax.set_title(f"{table.caption}: {table.title}", fontsize=9)
    _outside_legend(ax)
    values = np.concatenate([df["paper"].dropna().values, df["ours"].dropna().values])
    if values.size:
        ax.set_ylim(max(0, values.min() - 10), min(100, values.max() + 5))
    return _save(fig, figure_path(out, table, "bars", df.attrs.get("metric")))


def plot_sweep(df: pd.DataFrame, table: TableSpec, out: Path, preset: str) -> list[Path]:
    """The metric against the table's swept value (its spec's figure of kind sweep: a width, a loss weight), paper
    and ours. With ``delta_to_best`` each series is drawn relative to its own best value, so the paper's curve and ours (a
    reduced preset lies tens of points lower) share one axis: where the optimum is, and how sharp."""
    spec = table.figure
    x = df[spec.column].astype(float).values
    paper, ours = df["paper"].astype(float), df["ours"].astype(float)
    if spec.delta_to_best:
        paper, ours = paper - paper.max(), ours - ours.max()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(x, paper, "o-", label="paper", color="#9aa5b1")
    ax.errorbar(x, ours, yerr=_error_bars(df), fmt="s-", label=f"ifbf ({preset}, 95% CI)", color="#2f6fdb",
                capsize=3)
    if spec.log_x:
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.set_xlabel(spec.xlabel)
    label = df.attrs.get("label", "mIoU")
    ax.set_ylabel(f"{label} − the series' best (points)" if spec.delta_to_best else f"{label} (%)")
    if spec.delta_to_best:
        ax.axhline(0, color="black", lw=0.5)
    ax.set_title(f"{table.caption}: {table.title}", fontsize=9)
    _outside_legend(ax)
    return _save(fig, figure_path(out, table, spec.file or spec.column, df.attrs.get("metric")))


def plot_steps(records: pd.DataFrame, table: TableSpec, out: Path, preset: str,
               metric: str | None = None) -> list[Path]:
    """Each ablation step of the table (rows with ``adds_to``) in ``metric`` (default: the table's first):
    Δ = row − the row it adds to, the paper's and ours with its paired 95% interval; nothing for a table
    without steps, or where neither the paper nor a run gives a step a value."""
    metric = metric or table.scores[0]
    lines = step_lines(table, row_counts(records, table.number, metric), seed_noise(records, metric), metric=metric)
    if not any(line.paper is not None or line.low is not None for line in lines):
        return []
    named = "" if metric == table.scores[0] else f" {score_label(metric)}"
    fig = forest_figure(lines, f"{table.caption}: each ablation step, Δ{named} = row − the row it adds to",
                        grouped=False, ours=f"ifbf ({preset}), 95% CI")
    return _save(fig, figure_path(out, table, "delta", metric))


def plot_claims(lines: list[ClaimLine], out: Path, footnote: str = "") -> list[Path]:
    """Every claim's forest plot (``claims.{png,pdf}``; nothing without claims)."""
    if not lines:
        return []
    fig = forest_figure(lines, "The paper's claims: its number (black tick) and ours with its 95% interval",
                        footnote=footnote)
    return _save(fig, out / CLAIMS)


def _plot_curves(curves: pd.DataFrame, value: str, scale: float, style: str, ylabel: str, title: str,
                 path: Path) -> list[Path]:
    """One line per run (``curves``: label, iter and ``value``), against iteration; nothing when empty."""
    if curves.empty:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in curves.groupby("label", sort=False):
        ax.plot(curve["iter"], scale * curve[value], style, label=label, lw=1, ms=3)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    _outside_legend(ax, fontsize=6)
    return _save(fig, path)


def plot_losses(records: pd.DataFrame, table: TableSpec, out: Path, preset: str) -> list[Path]:
    """Training-loss curves (log.jsonl) of the runs behind a table's rows: the main output's loss, so rows
    with auxiliary heads (or another λ) compare with those without."""
    return _plot_curves(losses(records, table.number), "loss_out", 1.0, "-", "training loss, main output (no aux)",
                        f"{table.caption}: training loss (preset {preset})", out / f"table{table.number}_loss")


def plot_val_curves(records: pd.DataFrame, table: TableSpec, out: Path, preset: str) -> list[Path]:
    """Validation mIoU against iteration (``runtime.val_every``) of the runs behind a table's rows."""
    return _plot_curves(val_curves(records, table.number), "val_miou", 100.0, "o-",
                        "val mIoU (%), single scale, fixed subset",
                        f"{table.caption}: validation during training (preset {preset})",
                        out / f"table{table.number}_curves")


def write_figures(records: pd.DataFrame, table: TableSpec, frames: Mapping[str, pd.DataFrame], out: Path, preset: str,
                  paper_only: bool = False) -> list[Path]:
    """The figure the table's spec asks for and its steps' Δ, for each of its metrics (``frames``:
    ``tables.table_frames``; none for per-class tables), and its loss and validation curves."""
    if table.figure is None:
        return []
    shown = "paper values only" if paper_only else preset
    plot = plot_sweep if table.figure.kind == "sweep" else plot_ablation
    paths = [p for metric, df in frames.items()
             for p in plot(df, table, out, shown) + plot_steps(records, table, out, shown, metric)]
    if not paper_only:
        paths += plot_losses(records, table, out, shown)
        paths += plot_val_curves(records, table, out, shown)
    return paths

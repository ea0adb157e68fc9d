"""Tables and plots from finished runs. ``collect`` builds one numeric data frame per table (pure: it only
reads metrics); markdown, LaTeX and CSV are three renderings of that frame, and each figure is one
function that writes PNG and PDF."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ifbf.data.labels import CLASS_NAMES
from ifbf.engine.rundir import RunDir
from ifbf.experiments import TableSpec
from ifbf.plan import Plan

SHORT = dict(zip(CLASS_NAMES, ["Road", "S.walk", "Build", "Wall", "Fence", "Pole", "T-Light", "T-Sign", "Veg",
                                "Terrain", "Sky", "Person", "Rider", "Car", "Truck", "Bus", "Train", "Motor", "Bike"]))

# Table columns that describe a row: display name and how to read it from the row's resolved config.
COLUMNS = {
    "backbone": ("BaseNet", lambda c: {"resnet50": "ResNet50", "resnet101": "ResNet101"}.get(c.model.backbone, c.model.backbone)),
    "aspp": ("ASPP", lambda c: c.model.aspp),
    "skip": ("Skip-Connection", lambda c: c.model.skip),
    "balanced_fusion": ("Feature Balanced Fusion", lambda c: c.model.balanced_fusion),
    "spatial_stream": ("Spatial Stream", lambda c: c.model.spatial_stream),
    "spatial_channels": ("Channel", lambda c: c.model.spatial_channels),
    "aux_weight": ("λ", lambda c: c.train.aux_weight),
    "ohem": ("OHEM", lambda c: c.train.ohem != "none"),
    "scales": ("DA", lambda c: c.data.scales != (1.0,)),
    "eval_scales": ("MS", lambda c: len(c.eval.scales) > 1),
}


def _cell_result(run_dir: Path, key: str) -> dict | None:
    metrics = RunDir(run_dir).metrics() or {}
    return metrics.get("evaluations", {}).get(key)


def _noise_flag(delta: float, std: float, n: int) -> str:
    if math.isnan(delta):
        return ""
    if n < 2:
        return "n<2"
    return "yes" if abs(delta) <= 2 * std else "no"


def collect(plan: Plan, table: TableSpec, paper_only: bool = False) -> pd.DataFrame:
    """One numeric frame for ``table``: a row per table row (paper value, ours mean/std over seeds, Δ)."""
    if table.metric == "per_class":
        return _collect_per_class(plan, table, paper_only)
    records = []
    for row in table.rows:
        cells = [c for c in plan.cells if c.table == table.number and c.row.name == row.name]
        values = [] if paper_only else [
            100 * r["miou"] for c in cells if (r := _cell_result(plan.training_of(c).run_dir, c.eval_key))
        ]
        record: dict = {"row": row.name}
        if cells:
            for key in table.columns:
                name, getter = COLUMNS[key]
                record[name] = getter(cells[0].cfg)
        paper = row.paper.get("miou", math.nan)
        mean = float(np.mean(values)) if values else math.nan
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        record.update({"paper": paper, "ours": mean, "std": std, "seeds": len(values), "delta": mean - paper})
        record["within_noise"] = _noise_flag(record["delta"], std, len(values))
        records.append(record)
    return pd.DataFrame.from_records(records).set_index("row")


def _collect_per_class(plan: Plan, table: TableSpec, paper_only: bool) -> pd.DataFrame:
    columns = [*CLASS_NAMES, "miou"]
    frame = {row.name: [row.paper.get(c, math.nan) for c in columns] for row in table.rows}
    for row in table.runnable():
        cells = [c for c in plan.cells if c.table == table.number and c.row.name == row.name]
        results = [] if paper_only else [
            r for c in cells if (r := _cell_result(plan.training_of(c).run_dir, c.eval_key))
        ]
        ours = [
            float(np.mean([100 * r["iou"][c] for r in results if r["iou"].get(c) is not None] or [math.nan]))
            if c != "miou" else float(np.mean([100 * r["miou"] for r in results] or [math.nan]))
            for c in columns
        ]
        label = f"{row.name}, ifbf ({len(results)} seed{'s' if len(results) != 1 else ''})"
        frame[label] = ours
        frame[f"Δ ({row.name}, ifbf − paper)"] = [o - p for o, p in zip(ours, frame[row.name])]
    df = pd.DataFrame.from_dict(frame, orient="index", columns=columns)
    df.index.name = "method"
    return df.rename(columns={**SHORT, "miou": "Mean"})


def _fmt(value: object, signed: bool = False) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "✓" if value else ""
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "—"
        return f"{value:+.2f}" if signed else f"{value:.2f}"
    return str(value)


def display(df: pd.DataFrame) -> pd.DataFrame:
    """Strings for markdown/LaTeX: ✓ for switches, 2 decimals, — for missing, ours as mean ± std."""
    out = pd.DataFrame(index=df.index)
    if "paper" in df.columns:  # a mIoU table
        for col in df.columns:
            if col in ("paper", "ours", "std", "seeds", "delta", "within_noise"):
                continue
            out[col] = [_fmt(v) for v in df[col]]
        out["paper mIoU"] = [_fmt(v) for v in df["paper"]]
        out["ours mIoU"] = [
            "—" if math.isnan(m) else f"{m:.2f} ± {s:.2f}" if not math.isnan(s) else f"{m:.2f}"
            for m, s in zip(df["ours"], df["std"])
        ]
        out["Δ"] = [_fmt(v, signed=True) for v in df["delta"]]
        out["seeds"] = [str(int(v)) for v in df["seeds"]]
        out["within seed noise"] = list(df["within_noise"])
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
    shown = display(df)
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
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"table{table.number}"
    caption = f"Table {table.number}: {table.title}"
    md = f"# {caption}\n\n{display(df).to_markdown(disable_numparse=True)}\n"
    if note:
        md += f"\n{note}\n"
    paths = [stem.with_suffix(".md"), stem.with_suffix(".tex"), stem.with_suffix(".csv")]
    paths[0].write_text(md)
    paths[1].write_text(to_latex_document(df, caption))
    df.to_csv(paths[2])
    return paths


# --- figures ---------------------------------------------------------------------------------------


def _save(fig, path: Path) -> list[Path]:
    paths = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def plot_ablation(df: pd.DataFrame, table: TableSpec, out: Path, preset: str) -> list[Path]:
    """Paper vs ours per row (bars, ours with ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(df))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(df)), 4))
    ax.bar(x - 0.2, df["paper"], 0.4, label="paper", color="#9aa5b1")
    ax.bar(x + 0.2, df["ours"].fillna(0), 0.4, yerr=df["std"], label=f"ifbf ({preset})", color="#2f6fdb", capsize=3)
    ax.set_xticks(x, df.index, rotation=30, ha="right")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(f"Table {table.number}: {table.title}", fontsize=9)
    ax.legend()
    values = np.concatenate([df["paper"].dropna().values, df["ours"].dropna().values])
    if values.size:
        ax.set_ylim(max(0, values.min() - 10), min(100, values.max() + 5))
    return _save(fig, out / f"table{table.number}_bars")


def plot_sweep(df: pd.DataFrame, table: TableSpec, column: str, xlabel: str, out: Path, preset: str,
               log_x: bool = False) -> list[Path]:
    """mIoU against a swept value (Table 3: spatial channels; Table 5: λ), paper and ours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = df[column].astype(float).values
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(x, df["paper"], "o-", label="paper", color="#9aa5b1")
    ax.errorbar(x, df["ours"], yerr=df["std"], fmt="s-", label=f"ifbf ({preset})", color="#2f6fdb", capsize=3)
    if log_x:
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mIoU (%)")
    ax.set_title(f"Table {table.number}: {table.title}", fontsize=9)
    ax.legend()
    return _save(fig, out / f"table{table.number}_{column.lower().replace('λ', 'lambda')}")


def plot_losses(plan: Plan, table: TableSpec, out: Path, preset: str) -> list[Path]:
    """Training-loss curves (log.jsonl) of the runs behind a table's rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = set()
    for cell in plan.cells:
        training = plan.training_of(cell)
        if cell.table != table.number or training.run_hash in drawn:
            continue
        log = RunDir(training.run_dir).read_log()
        if log:
            drawn.add(training.run_hash)
            label = cell.row.name + (f" (seed {cell.seed})" if cell.seed else "")
            ax.plot([r["iter"] for r in log], [r["loss_total"] for r in log], label=label, lw=1)
    if not drawn:
        plt.close(fig)
        return []
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (main + λ·aux)")
    ax.set_title(f"Table {table.number}: training loss (preset {preset})", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, out / f"table{table.number}_loss")


def write_figures(plan: Plan, table: TableSpec, df: pd.DataFrame, out: Path, paper_only: bool = False) -> list[Path]:
    paths: list[Path] = []
    if table.metric != "miou":
        return paths
    preset = "paper values only" if paper_only else plan.preset.name
    if table.number == 3:
        paths += plot_sweep(df, table, "Channel", "spatial stream channels C", out, preset, log_x=True)
    elif table.number == 5:
        paths += plot_sweep(df, table, "λ", "auxiliary loss weight λ", out, preset)
    else:
        paths += plot_ablation(df, table, out, preset)
    if not paper_only:
        paths += plot_losses(plan, table, out, preset)
    return paths


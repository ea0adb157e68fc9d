"""A table lists its metrics (``metrics:`` of experiments/<paper>/table<N>.yaml). Table 4 with pixel accuracy beside
mIoU (in memory: the paper gives no pixel accuracy): its table files, its bars and its steps' Δ figure, the
forest lines of its steps and REPORT.md read each metric, checked against values computed here from the
runs' confusion matrices. Pixel accuracy is one figure of all pixels, never one per class."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from fakeruns import confusions, finish_run, pooled_iou
from ifbf.commands.reproduce import cli
from ifbf.config import ConfigError, read_yaml
from ifbf.experiments import load_preset, load_table, table_path
from ifbf.orchestrate.plan import build_plan
from ifbf.report import figures, records
from ifbf.report.forest import step_lines
from ifbf.report.tables import table_frames, write_table
from ifbf.store.rundir import PER_IMAGE_COUNTS, SCORES, RunDir

N_IMAGES, K = 30, 19
LEVEL = {"none": 0.40, "OHEM": 0.46, "OHEM + DA": 0.55}  # class IoU of Table 4's three trainings (MS: inference)


def pixel_accuracy(conf: np.ndarray) -> float:
    """The reference: pixels on the diagonal of the summed confusion matrix over all labelled pixels, in %."""
    total = conf.sum(0)
    return 100 * np.trace(total) / total.sum()


@pytest.fixture(scope="module")
def table4(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """Table 4 on the smoke preset, each training finished from its own confusion matrices (row -> them)."""
    results = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    gt = rng.integers(300, 1200, size=(N_IMAGES, K))
    by_row = {}
    for training in build_plan([load_table(4)], load_preset("smoke"), 1, results).trainings.values():
        rows = [c.row.name for c in training.cells]
        level = next(LEVEL[r] for r in rows if r in LEVEL)
        conf = confusions(np.clip(level + rng.normal(0, 0.08, size=gt.shape), 0, 1), gt)
        finish_run(training, conf)
        by_row |= dict.fromkeys(rows, conf)
    return results, by_row


def _spec():
    return dataclasses.replace(load_table(4), metrics=("miou", "pixel_acc"))


def test_pixel_accuracy_is_one_figure_from_the_iou_counts():
    """Every wrong pixel is a false negative of one class and a false positive of another: the IoU counts give
    pixel accuracy exactly, one value for all classes (also where a class is absent), resampled or not."""
    rng = np.random.default_rng(3)
    conf = rng.integers(0, 50, size=(5, K, K)) * (rng.random((5, K, K)) < 0.3)
    conf[:, 4, :] = conf[:, :, 4] = 0  # a class in neither ground truth nor prediction
    inter = conf.diagonal(axis1=1, axis2=2)
    union = conf.sum(1) + conf.sum(2) - inter
    score = SCORES["pixel_acc"]({"inter": inter.sum(0), "union": union.sum(0)})
    assert score.shape == (1,) and 100 * score[0] == pytest.approx(pixel_accuracy(conf), rel=1e-12)
    per_image = SCORES["pixel_acc"]({"inter": inter, "union": union})  # (images, 1), as a resample's sums
    assert per_image.shape == (5, 1)
    assert 100 * per_image[:, 0] == pytest.approx([pixel_accuracy(c[None]) for c in conf], rel=1e-12)


def test_the_table_shows_each_metric(table4, tmp_path):
    results, conf = table4
    table = _spec()
    frames = table_frames(records.collect([table], load_preset("smoke"), 1, results), table)
    assert list(frames) == ["miou", "pixel_acc"]
    for row in table.runnable():
        accuracy, iou = frames["pixel_acc"].loc[row.name], frames["miou"].loc[row.name]
        assert accuracy["ours"] == pytest.approx(pixel_accuracy(conf[row.name]), rel=1e-12)
        assert accuracy["ci_low"] < accuracy["ours"] < accuracy["ci_high"] and np.isnan(accuracy["paper"])
        assert iou["ours"] == pytest.approx(100 * np.nanmean(pooled_iou(conf[row.name])), rel=1e-12)
        assert iou["paper"] == row.paper["miou"]
    write_table(frames, table, tmp_path)
    header = (tmp_path / "table4.md").read_text().splitlines()[2]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "row", *(c.header for c in table.columns), "paper mIoU", "ours mIoU", "95% CI mIoU", "Δ mIoU",
        "ours pixel accuracy", "95% CI pixel accuracy", "seeds"]  # no paper column for pixel accuracy, no Δ
    csv = pd.read_csv(tmp_path / "table4.csv", index_col=0)
    assert list(csv["ours_pixel_acc"]) == pytest.approx([pixel_accuracy(conf[r.name]) for r in table.runnable()])
    assert list(csv["ours"]) == list(frames["miou"]["ours"])  # the first metric's columns keep their names
    assert r"ours pixel accuracy ($\pm$ 95\% CI)" in (tmp_path / "table4.tex").read_text()


def test_the_figures_and_the_steps_read_each_metric(table4, tmp_path, monkeypatch):
    results, conf = table4
    table = _spec()
    frame = records.collect([table], load_preset("smoke"), 1, results)
    frames = table_frames(frame, table)
    lines = step_lines(table, records.row_counts(frame, 4, "pixel_acc"), records.seed_noise(frame, "pixel_acc"),
                       resamples=2000, metric="pixel_acc")
    steps = [(r.name, r.adds_to) for r in table.runnable() if r.adds_to is not None]
    assert [line.label for line in lines] == [f"{parent} → {row}" for row, parent in steps]
    for line, (row, parent) in zip(lines, steps):
        assert line.ours == pytest.approx(pixel_accuracy(conf[row]) - pixel_accuracy(conf[parent]), abs=1e-9)
        assert line.low <= line.ours <= line.high and line.paper is None
    drawn: dict[str, Figure] = {}

    def keep(fig: Figure, path: Path) -> list[Path]:
        drawn[path.name] = fig
        return [path]

    monkeypatch.setattr(figures, "_save", keep)
    figures.write_figures(frame, table, frames, tmp_path, "smoke")
    assert list(drawn) == ["table4_bars", "table4_delta", "table4_bars_pixel_acc", "table4_delta_pixel_acc"]
    (delta,) = drawn["table4_delta_pixel_acc"].axes
    assert delta.get_xlabel() == "Δ pixel accuracy (points)"
    ours = [ln.get_xdata()[0] for ln in delta.get_lines() if ln.get_gid() == "ours"]
    assert ours == pytest.approx([line.ours for line in lines])
    assert not [ln for ln in delta.get_lines() if ln.get_gid() == "paper"]  # the paper gives none
    bars = drawn["table4_bars_pixel_acc"].axes[0]
    assert bars.get_ylabel() == "pixel accuracy (%)"
    _, ours = (c for c in bars.containers if isinstance(c, BarContainer))  # the paper's bars, then ours
    assert [b.get_height() for b in ours] == pytest.approx(
        [pixel_accuracy(conf[r.name]) for r in table.runnable()])


def test_report_md_shows_each_metric(table4, monkeypatch):
    results, conf = table4
    monkeypatch.setattr("ifbf.orchestrate.reproduce.load_table", lambda number, paper="ifbfnet": _spec())
    assert cli(["--table", "4", "--preset", "smoke", "--results", str(results), "--report-only"]) == 0
    report = (results / "smoke" / "REPORT.md").read_text()
    section = report[report.index("## Table 4"):].split("\n## ")[0]
    assert "| ours mIoU " in section and "| ours pixel accuracy " in section
    assert f"| {pixel_accuracy(conf['OHEM']):.2f} " in section
    assert (results / "smoke" / "table4_delta_pixel_acc.png").is_file()


def test_a_new_per_image_count_needs_nothing_of_the_fake_runs(tmp_path, monkeypatch):
    """The shared fake runs compute every count the run store asks for from their confusion matrices."""
    monkeypatch.setitem(PER_IMAGE_COUNTS, "gt", lambda conf: conf.sum(1))  # ground-truth pixels per class
    training = next(iter(build_plan([load_table(4)], load_preset("smoke"), 1, tmp_path).trainings.values()))
    conf = confusions(np.full((3, K), 0.5), np.full((3, K), 100))
    rd = finish_run(training, conf)
    stored = rd.per_image(next(iter(rd.metrics()["evaluations"])))
    assert set(stored.counts) == {"inter", "union", "gt"} and (stored.counts["gt"] == conf.sum(2)).all()


def _load_edited(tmp_path: Path, monkeypatch, edit) -> None:
    spec = read_yaml(table_path(4))
    edit(spec)
    path = tmp_path / "table4.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    monkeypatch.setattr("ifbf.experiments.table_path", lambda number, paper="ifbfnet": path if number == 4 else table_path(number, paper))
    load_table(4)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update(metrics=["miou", "pixel_accuracy"]), r"metrics \['pixel_accuracy'\]: not a score"),
    (lambda s: s.update(metrics=[]), "'metrics' lists what the table shows"),
    (lambda s: s.update(metrics=["miou", "miou"]), "each metric once"),
    (lambda s: s.update(metrics=["per_class", "miou"]), "per_class alone"),
    (lambda s: s.update(metric="miou"), r"'metric: miou' is now a list: metrics: \[miou\]"),
    (lambda s: s["rows"][0]["paper"].update(pixel_acc=95.0), r"paper values \['pixel_acc'\] are for no column"),
])
def test_a_bad_metrics_entry_is_one_clear_error(tmp_path, monkeypatch, edit, message):
    with pytest.raises(ConfigError, match=message):
        _load_edited(tmp_path, monkeypatch, edit)
    _load_edited(tmp_path, monkeypatch, lambda s: (s.update(metrics=["miou", "pixel_acc"]),
                                                   s["rows"][0]["paper"].update(pixel_acc=95.0)))  # then it fits

"""Per-image intersection and union counts stored beside every evaluation: their sums reproduce the
stored mIoU exactly, and each image's ratios are cityscapesscripts' IoUs of that image alone. A count and a
score registered in ifbf/store/runtypes.py reach the run store and the bootstrap unchanged (the metric path)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cityscapes_reference import reference_per_image
from conftest import TINY_TRAIN
from ifbf.commands.cli import main
from ifbf.config import BASE_CONFIG, load_config
from ifbf.data.cityscapes import resolve_root
from ifbf.data.labels import CLASS_NAMES
from ifbf.errors import IfbfError
from ifbf.store.rundir import RunDir
from ifbf.engine.run import run
from ifbf.store import runtypes
from ifbf.report.stats import Counts, SeedNoise, row_interval, row_score


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run(load_config(BASE_CONFIG, TINY_TRAIN), out, progress=False)
    assert main(["evaluate", "--run", str(out), "--scales", "0.75", "1.0", "--flip", "--no-progress"]) == 0
    return out


def test_sums_reproduce_every_stored_miou_exactly(evaluated_run):
    metrics = json.loads((evaluated_run / "metrics.json").read_text())
    assert len(metrics["evaluations"]) == 2
    for key, entry in metrics["evaluations"].items():
        per_image = RunDir(evaluated_run).per_image(key)
        assert entry["per_image"] == f"evaluations/{key}/per_image.npz"
        inter, union = per_image.inter, per_image.union
        assert inter.shape == union.shape == (4, 19) and inter.dtype == np.int64 and len(per_image.names) == 4
        conf = np.array(entry["confusion"])
        assert (inter.sum(0) == np.diag(conf)).all()
        assert (union.sum(0) == conf.sum(0) + conf.sum(1) - np.diag(conf)).all()
        total_inter, total_union = inter.sum(0).astype(float), union.sum(0).astype(float)
        iou = np.divide(total_inter, total_union, out=np.full(19, np.nan), where=total_union > 0)
        assert float(np.nanmean(iou)) == entry["miou"]  # exactly, not approximately
        assert [entry["iou"][c] for c in CLASS_NAMES] == [None if np.isnan(v) else v for v in iou]
        with np.load(evaluated_run / entry["per_image"], allow_pickle=False) as stored:
            counts = Counts.of(stored["inter"], stored["union"])
        assert row_score([counts]) == pytest.approx(100 * entry["miou"], abs=1e-12)


def test_each_image_matches_cityscapesscripts(evaluated_run, tmp_path):
    out = tmp_path / "export"
    assert main(["export", "--run", str(evaluated_run), "--split", "val", "--out", str(out), "--no-progress"]) == 0
    cfg = load_config(evaluated_run / "config.yaml")
    reference = reference_per_image(resolve_root(cfg.data), "val", out)
    metrics = json.loads((evaluated_run / "metrics.json").read_text())
    headline = [k for k, e in metrics["evaluations"].items() if e["eval"] == metrics["eval"]][0]
    per_image = RunDir(evaluated_run).per_image(headline)
    assert sorted(per_image.names) == sorted(reference)
    for name, inter, union in zip(per_image.names, per_image.inter, per_image.union):
        ours = np.divide(inter, union, out=np.full(19, np.nan), where=union > 0)
        expected = np.array([reference[name][c] for c in CLASS_NAMES], dtype=float)
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)  # NaN (class absent) on both sides


def test_record_per_image_is_atomic_and_checked(tmp_path):
    run_dir = RunDir(tmp_path)
    inter = np.arange(6).reshape(2, 3)
    path = run_dir.record_per_image("abc", ["a", "b"], {"inter": inter, "union": inter + 1})
    assert sorted(p.name for p in path.parent.iterdir()) == ["per_image.npz"]  # no temporary left
    back = run_dir.per_image("abc")
    assert back.names == ["a", "b"] and (back.union == inter + 1).all()
    assert run_dir.per_image("other") is None
    with pytest.raises(ValueError, match="3 names"):
        run_dir.record_per_image("abc", ["a", "b", "c"], {"inter": inter, "union": inter})
    with pytest.raises(ValueError, match=r"missing \['union'\]"):  # every PER_IMAGE_COUNTS entry is stored
        run_dir.record_per_image("abc", ["a", "b"], {"inter": inter})


def test_a_new_per_image_count_flows_from_evaluation_to_the_interval(tmp_path, monkeypatch):
    """The metric path of docs/architecture.md: one count and one score registered in ifbf/store/runtypes.py reach
    evaluation, the run store and the bootstrap with no other change (here: per-class pixel accuracy)."""
    monkeypatch.setitem(runtypes.SCORES, "macc_needs_gt", lambda s: s["inter"] / s["gt"])
    older = RunDir(tmp_path / "older")  # a run evaluated before the new count existed
    older.record_per_image("k", ["a", "b"], {"inter": np.ones((2, 19), int), "union": np.full((2, 19), 2)})
    monkeypatch.setitem(runtypes.PER_IMAGE_COUNTS, "gt", lambda conf: conf.sum(1))  # ground-truth pixels
    assert set(older.per_image("k").counts) == {"inter", "union"}  # still reads: not a damaged file
    with pytest.raises(IfbfError, match="needs the per-image count 'gt'"):  # its new metric: no figure
        row_score([Counts(older.per_image("k").counts, metric="macc_needs_gt")])
    monkeypatch.setitem(runtypes.SCORES, "macc", lambda s: np.divide(
        np.asarray(s["inter"], float), np.asarray(s["gt"], float), out=np.full(np.shape(s["gt"]), np.nan),
        where=np.asarray(s["gt"]) > 0))
    out = tmp_path / "run"
    run(load_config(BASE_CONFIG, TINY_TRAIN), out, progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    [(key, entry)] = metrics["evaluations"].items()
    stored = RunDir(out).per_image(key)
    conf = np.array(entry["confusion"])
    assert (stored.counts["gt"].sum(0) == conf.sum(1)).all()  # computed and stored per image by the engine
    counts = Counts(stored.counts, tuple(stored.names), metric="macc")
    expected = np.diag(conf) / conf.sum(1)
    assert row_score([counts]) == pytest.approx(100 * np.nanmean(np.where(conf.sum(1) > 0, expected, np.nan)))
    interval = row_interval([counts], SeedNoise(0.0), resamples=200)
    assert interval.low < interval.estimate < interval.high  # the bootstrap resamples the new count too

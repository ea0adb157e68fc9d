"""Table 6 / test split: the server's result file is parsed strictly and recorded in the run directory;
the test submission is the paper's MS + flip labelId export, zipped."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, TINY_TRAIN
from ifbf.commands.cli import main
from ifbf.config import BASE_CONFIG, PAPER_MS_SCALES, EvalConfig, load_config
from ifbf.data.labels import CLASS_NAMES, TRAIN_TO_ID
from ifbf.store.rundir import EvalResult, RunDir, eval_key, server_eval_key
from ifbf.engine.export import export_test_submission
from ifbf.engine.server_result import SERVER_EVAL, ServerResultError, import_server_result, parse_server_result


def _paper_row() -> dict[str, float]:
    """IFBFNet's Table 6 row as transcribed in experiments/ifbfnet/table6.yaml (percent, one decimal)."""
    rows = yaml.safe_load((REPO / "experiments" / "ifbfnet" / "table6.yaml").read_text())["rows"]
    return next(r["paper"] for r in rows if r["name"] == "IFBFNet (ours)")


def _csv(path, row: dict[str, float]):
    path.write_text("class,IoU\n" + "".join(f"{'mIoU' if k == 'miou' else k},{v}\n" for k, v in row.items()))
    return path


def test_the_papers_table6_row_is_accepted_in_each_format(tmp_path):
    row = _paper_row()
    want = {n: row[n] / 100 for n in CLASS_NAMES}
    parsed = parse_server_result(_csv(tmp_path / "long.csv", row))
    assert parsed["iou"] == pytest.approx(want) and parsed["miou"] == pytest.approx(0.796)
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"{k.replace(' ', '_').title()}" for k in row) + "\n" + ",".join(map(str, row.values())))
    assert parse_server_result(wide) == parsed
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({("mIoU" if k == "miou" else k): v for k, v in row.items()}))
    assert parse_server_result(flat) == parsed
    cs = tmp_path / "resultPixelLevelSemanticLabeling.json"  # cityscapesscripts' output: fractions
    cs.write_text(json.dumps({"classScores": want, "averageScoreClasses": 0.796, "averageScoreCategories": 0.9}))
    assert parse_server_result(cs)["iou"] == pytest.approx(want)
    server_page = _csv(tmp_path / "page.csv", {**row, "iIoU class": 58.9, "IoU category": 91.2})
    assert parse_server_result(server_page)["extra"] == pytest.approx({"iiou class": 0.589, "iou category": 0.912})


@pytest.mark.parametrize("change, message", [
    (lambda r: r | {"traffic lights": r.pop("traffic light")}, r"unknown class names \['traffic lights'\]"),
    (lambda r: r.pop("bicycle") and r, "missing bicycle"),
    (lambda r: r.pop("miou") and r, "missing mIoU"),
    (lambda r: r | {"road": 101.0}, r"out of range \[0, 100\]: road=101.0"),
    (lambda r: r | {"road": -1.0}, r"out of range \[0, 100\]: road=-1.0"),
    (lambda r: r | {"miou": 79.8}, "mIoU 79.80 is not the mean of the class IoUs"),
    (lambda r: r | {"wall": "n/a"}, "value 'n/a' of 'wall' is not a number"),
])
def test_anything_else_is_a_clear_error(tmp_path, change, message):
    with pytest.raises(ServerResultError, match=message):
        parse_server_result(_csv(tmp_path / "r.csv", change(dict(_paper_row()))))


def test_wrong_file_kinds_are_refused(tmp_path):
    (tmp_path / "r.xlsx").write_bytes(b"PK\x03\x04\xff\xfe")
    with pytest.raises(ServerResultError, match="not a text file|expected a .csv or .json"):
        parse_server_result(tmp_path / "r.xlsx")
    (tmp_path / "r.json").write_text("[1, 2]")
    with pytest.raises(ServerResultError, match="expected a JSON object"):
        parse_server_result(tmp_path / "r.json")
    (tmp_path / "d.csv").write_text("road,98.7\nroad,98.6\n")
    with pytest.raises(ServerResultError, match="'road' appears twice"):
        parse_server_result(tmp_path / "d.csv")


def _finished_run(tmp_path):
    cfg = load_config(BASE_CONFIG, TINY_TRAIN)
    run_dir = RunDir(tmp_path / "run")
    run_dir.claim(cfg)
    val = EvalResult(0.5, {n: 0.5 for n in CLASS_NAMES}, split="val")
    run_dir.record_evaluation(cfg, cfg.eval, val, main=True)
    return run_dir, cfg


def test_import_records_the_server_result_beside_the_val_evaluation(tmp_path, capsys):
    run_dir, cfg = _finished_run(tmp_path)
    path = _csv(tmp_path / "server.csv", _paper_row())
    assert main(["import-server-result", "--run", str(run_dir.path), str(path)]) == 0
    assert "mIoU 79.60" in capsys.readouterr().out
    metrics = run_dir.metrics()
    key = server_eval_key(EvalConfig(scales=PAPER_MS_SCALES, flip=True, split="test"))
    assert key == "server-" + eval_key(SERVER_EVAL) and set(metrics["evaluations"]) == {eval_key(cfg.eval), key}
    entry = metrics["evaluations"][key]
    assert entry["source"] == "cityscapes-test-server" and entry["split"] == "test"
    assert entry["eval"]["flip"] is True and entry["eval"]["scales"] == list(PAPER_MS_SCALES)
    assert entry["miou"] == pytest.approx(0.796) and entry["iou"]["road"] == pytest.approx(0.987)
    assert metrics["miou"] == 0.5 and run_dir.finished(cfg)  # the headline (val) result is untouched


def test_import_refuses_an_unfinished_run(tmp_path, capsys):
    run_dir = RunDir(tmp_path / "run")
    run_dir.claim(load_config(BASE_CONFIG, TINY_TRAIN))
    path = _csv(tmp_path / "server.csv", _paper_row())
    assert main(["import-server-result", "--run", str(run_dir.path), str(path)]) == 2
    assert "has not finished training" in capsys.readouterr().err
    assert run_dir.metrics() is None


def test_server_setting_is_the_papers_test_inference():
    """Section 4.4: "multi-scales prediction and flipping" on the test set; MS = the six scales of 4.3.4."""
    assert SERVER_EVAL == EvalConfig(scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip=True, split="test")


def test_test_submission_is_the_export_zipped(tmp_path):
    from ifbf.engine.run import run

    cfg = load_config(BASE_CONFIG, TINY_TRAIN + ["train.iters=2", "train.warmup_iters=1", "runtime.ckpt_every=2"])
    run(cfg, tmp_path / "run", progress=False)
    cheap = EvalConfig(scales=(0.5, 1.0), flip=True, split="test")  # SERVER_EVAL's six scales cost minutes on CPU
    archive = export_test_submission(tmp_path / "run", tmp_path / "submission", cheap, progress=False)
    assert archive == tmp_path / "submission.zip"
    # the same predictions as `ifbf export` with the same inference setting
    assert main(["export", "--run", str(tmp_path / "run"), "--split", "test", "--scales", "0.5", "1.0", "--flip",
                 "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        assert names == sorted(p.name for p in (tmp_path / "cli").glob("*.png")) and len(names) == 2
        for name in names:
            assert name.endswith("_leftImg8bit.png")
            ids = np.asarray(Image.open(z.open(name)))
            assert np.array_equal(ids, np.asarray(Image.open(tmp_path / "cli" / name)))
            assert set(np.unique(ids).tolist()) <= set(TRAIN_TO_ID[:19].tolist())


def test_no_miou_against_the_void_cityscapes_test_labels(synth_root):
    from ifbf.data.cityscapes import DataError
    from ifbf.data.loader import eval_dataset

    cfg = load_config(BASE_CONFIG, [f"data.root={synth_root}", "eval.split=test"])
    with pytest.raises(DataError, match="test labels are private.*ifbf import-server-result"):
        eval_dataset(cfg)
    assert len(eval_dataset(cfg, with_labels=False)) == 2  # exporting the test split is fine
    synthetic = load_config(BASE_CONFIG, TINY_TRAIN + ["eval.split=test"])
    assert len(eval_dataset(synthetic)) == 2  # the synthetic test split has real labels


def test_table6_row_reads_the_server_key_of_its_own_eval_setting():
    """The paper preset's Table 6 row evaluates with exactly SERVER_EVAL, so the report finds the imported
    result under server_eval_key(cell eval) = 'server-' + eval_key(SERVER_EVAL)."""
    from ifbf.experiments import load_preset, load_table, row_config

    row = load_table(6).runnable()[0]
    cfg = row_config(row, load_preset("paper"))
    assert cfg.eval == SERVER_EVAL
    assert server_eval_key(cfg.eval) == "server-" + eval_key(SERVER_EVAL)


def test_a_cityscapes_test_row_exports_then_waits_for_the_server(tmp_path, monkeypatch):
    """On Cityscapes a test-split cell is never scored against the void labels: its job writes the upload
    into the run dir, the plan counts it as handled, the table says "awaiting server result", and the
    imported server result fills the row."""
    from ifbf.data.synth import SynthSpec, write_dataset
    from ifbf.engine.run import run
    from ifbf.experiments import Preset, load_table
    from ifbf.orchestrate.plan import build_plan
    from ifbf.report import records
    from ifbf.report.tables import table_frame

    root = write_dataset(tmp_path / "cityscapes", SynthSpec(train=4, val=2, test=2, height=64, width=128))
    (root / "SYNTHETIC.json").unlink()  # posing as the real dataset, whose test labels are void
    monkeypatch.setenv("CITYSCAPES_DATASET", str(root))
    monkeypatch.setattr("ifbf.engine.export.TEST_IMAGES", 2)  # the real test split has 1525 images
    tiny = [o for o in TINY_TRAIN if not o.startswith(("data.dataset", "data.synth"))]
    preset = Preset("tiny", (*tiny, "data.dataset=cityscapes", "train.iters=2", "train.warmup_iters=1",
                             "runtime.ckpt_every=2"), {"resnet101": "resnet18"}, {})
    table = load_table(6)
    plan = build_plan([table], preset, 1, tmp_path / "results")
    ours = next(t for t in plan.trainings.values() if t.cfg.model.arch == "ifbfnet")
    assert ours.status() == "todo"
    run(ours.cfg, ours.run_dir, ours.evals[1:], progress=False)
    metrics = RunDir(ours.run_dir).metrics()
    assert "evaluations" not in metrics or not metrics["evaluations"]  # nothing scored against void labels
    (archive,) = metrics["exports"].values()
    assert (ours.run_dir / archive).is_file() and ours.status() == "done"
    frame = records.collect([table], preset, 1, tmp_path / "results")
    assert "IFBFNet (ours), ifbf (awaiting server result)" in table_frame(frame, table).index
    import_server_result(ours.run_dir, _csv(tmp_path / "server.csv", _paper_row()), ours.cfg.eval)
    df = table_frame(records.collect([table], preset, 1, tmp_path / "results"), table)
    assert df.loc["IFBFNet (ours), ifbf (1 seed)", "Mean"] == pytest.approx(df.loc["IFBFNet (ours)", "Mean"], abs=0.05)

"""reproduce.py: planning and dedup, idempotent re-runs, reports, and the whole loop on tiny runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import PAPER, REPO, TINY_TRAIN
from ifbf.errors import ExitCode, TrainingDiverged
from ifbf.experiments import load_preset, load_table
from ifbf.store.rundir import read_status, write_status
from ifbf.orchestrate.plan import build_plan
from ifbf.commands.reproduce import cli

# Every run of these tests: the tiny engine recipe on top of the smoke preset, 6 iterations.
TINY = [*(o for o in TINY_TRAIN if not o.startswith("eval.")), "train.iters=6", "runtime.ckpt_every=3"]


def _plan(tables, seeds=1, results=None, preset="smoke"):
    return build_plan([load_table(n) for n in tables], load_preset(preset), seeds, results or REPO / "results")


def test_shared_training_is_counted_once():
    plan = _plan([2, 3, 5])
    # Table 2's last R101 row, Table 3's C=128 and Table 5's λ=0.4 are one training
    shared = [t for t in plan.trainings.values() if len(t.cells) > 1]
    assert len(shared) == 1
    assert sorted((c.table, c.row.name) for c in shared[0].cells) == [(2, "R101 IFBFNet"), (3, "C=128"), (5, "λ=0.4")]
    assert len(plan.cells) == sum(len(load_table(n).runnable()) for n in (2, 3, 5))
    assert len(plan.trainings) == len(plan.cells) - 2  # one training for those three cells


def test_inference_only_variants_reuse_the_training():
    plan = _plan([4])
    # "OHEM + DA" and "+ MS" differ only at inference: one training less than rows
    assert len(plan.cells) == len(load_table(4).runnable()) == len(plan.trainings) + 1
    shared = next(t for t in plan.trainings.values() if len(t.cells) == 2)
    assert sorted(len(e.scales) for e in shared.evals) == [1, 6]


def test_seeds_multiply_trainings():
    assert len(_plan([3], seeds=3).trainings) == 3 * len(load_table(3).runnable())


def test_smoke_preset_keeps_depths_apart():
    plan = _plan([2])
    backbones = {c.row.name: c.cfg.model.backbone for c in plan.cells}
    assert backbones["R50 IFBFNet"] == "resnet18" and backbones["R101 IFBFNet"] == "resnet34"
    assert all(c.cfg.data.dataset == "synthetic" for c in plan.cells)


def test_paper_rows_match_the_paper_switches():
    plan = _plan([2], preset="paper")
    flags = {c.row.name: (c.cfg.model.backbone, c.cfg.model.aspp, c.cfg.model.skip, c.cfg.model.balanced_fusion,
                          c.cfg.model.spatial_stream) for c in plan.cells}
    expected = {}
    for depth, backbone in (("R50", "resnet50"), ("R101", "resnet101")):
        steps = [f"{depth} BaseNet", f"{depth} + ASPP", f"{depth} + ASPP + skip", f"{depth} + ASPP + skip + fusion",
                 f"{depth} IFBFNet"]
        for n, row in enumerate(steps):  # rows add ASPP, skip, fusion, spatial stream one at a time
            expected[row] = (backbone, n >= 1, n >= 2, n >= 3, n >= 4)
    assert {row: flags[row] for row in expected} == expected


def _fake_finished(training, miou=0.5):
    from ifbf.store.rundir import EvalResult, RunDir

    rd = RunDir(training.run_dir)
    rd.claim(training.cfg)
    result = EvalResult(miou, {})
    for i, e in enumerate(training.evals):
        rd.record_evaluation(training.cfg, e, result, main=i == 0)
    (training.run_dir / "checkpoint.pth").write_bytes(b"")


def test_status_done_failed_running_todo(tmp_path):
    plan = _plan([3], results=tmp_path)
    t = list(plan.trainings.values())
    _fake_finished(t[0])
    write_status(t[1].run_dir, "failed", error="boom", log="/x/log.err")
    write_status(t[2].run_dir, "running")  # this process: alive
    write_status(t[3].run_dir, "running", pid=2**22 + 12345)  # a pid that does not exist: it died
    assert [x.status() for x in t] == ["done", "failed", "running", "stopped", *["todo"] * (len(t) - 4)]
    assert t[1].log_path() == "/x/log.err"


def test_plan_and_skip_and_rerun(tmp_path, capsys, monkeypatch):
    plan = _plan([3], results=tmp_path)
    t = list(plan.trainings.values())
    _fake_finished(t[0], 0.42)
    write_status(t[1].run_dir, "failed", error="boom", log="/x/log.err")
    assert cli(["--table", "3", "--preset", "smoke", "--results", str(tmp_path), "--plan"]) == 0
    out = capsys.readouterr().out
    assert f"{t[0].run_hash}  done" in out and f"{t[1].run_hash}  failed" in out and "log: /x/log.err" in out

    submitted = []
    monkeypatch.setattr("ifbf.orchestrate.reproduce.run_trainings",
                        lambda plan, todo, *a, **k: submitted.append([x.run_hash for x in todo]) or {})
    monkeypatch.setattr("ifbf.orchestrate.reproduce._check_environment", lambda *a: None)
    # exit 1: a training behind a cell has failed (and is not rerun without --rerun-failed)
    assert cli(["--table", "3", "--preset", "smoke", "--results", str(tmp_path), "--executor", "local"]) == 1
    out = capsys.readouterr().out
    assert submitted[-1] == [x.run_hash for x in t[2:]]  # neither the done nor the failed one
    assert "--rerun-failed" in out and "/x/log.err" in out
    assert cli(["--table", "3", "--preset", "smoke", "--results", str(tmp_path), "--executor", "local",
                "--rerun-failed"]) == 1  # the fake submission trained nothing
    assert submitted[-1] == [x.run_hash for x in t[1:]]
    # the finished run's value made it into the table
    df = pd.read_csv(tmp_path / "smoke" / "table3.csv", index_col=0)
    assert df.loc["C=16", "ours"] == pytest.approx(42.0)


def _paper_values(table_title_start: str, stop: str) -> list[float]:
    text = PAPER.read_text()
    start = text.index(table_title_start)
    block = text[start: text.index(stop, start)]
    return [float(v) for v in re.findall(r"^\s*(\d+\.\d+)\s*$", block, flags=re.M)]


@pytest.mark.skipif(not PAPER.is_file(), reason="the paper text in ../shared is absent")
def test_paper_only_tables_equal_the_paper_cell_for_cell(tmp_path):
    assert cli(["--table", "all", "--paper-only", "--results", str(tmp_path)]) == 0
    out = tmp_path / "paper-only"
    expected = {
        2: _paper_values("Table 2. Ablation", "Table 3. Comparison"),
        3: _paper_values("Table 3. Comparison", "Table 4. Performance"),
        4: _paper_values("Table 4. Performance", "Table 5. Comparison"),
        5: _paper_values("Table 5. Comparison", "Table 6. Per-class"),
    }
    for number, values in expected.items():
        df = pd.read_csv(out / f"table{number}.csv", index_col=0)
        assert df["paper"].dropna().tolist() == values, number  # the rows the paper gives, in its order
        assert df["ours"].isna().all()
        md = (out / f"table{number}.md").read_text()
        for v in values:
            assert f"{v:.2f}" in md
    t2 = pd.read_csv(out / "table2.csv", index_col=0)
    assert t2.loc["R101 + ASPP + skip", "Skip-Connection"] and not t2.loc["R101 + ASPP + skip", "Feature Balanced Fusion"]
    t1 = pd.read_csv(out / "table1.csv", index_col=0)
    ours = next(r for r in load_table(1).rows if r.name == "Ours").paper
    assert list(t1.columns[:3]) == ["Road", "S.walk", "Build"] and t1.loc["Ours", "Mean"] == ours["miou"]
    assert (out / "table2_bars.png").is_file() and (out / "table3_channel.pdf").is_file()
    assert (tmp_path / "README.md").is_file()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no LaTeX engine installed")
def test_latex_compiles(tmp_path):
    cli(["--table", "all", "--paper-only", "--results", str(tmp_path)])
    for tex in sorted((tmp_path / "paper-only").glob("*.tex")):
        result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
                                cwd=tex.parent, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-2000:]


def test_latex_is_booktabs_and_escaped(tmp_path):
    cli(["--table", "5", "--paper-only", "--results", str(tmp_path)])
    tex = (tmp_path / "paper-only" / "table5.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\begin{document}" in tex
    assert "$\\lambda$=0.4" in tex and "λ" not in tex


@pytest.mark.parametrize("executor", ["debug", "local"])
def test_end_to_end_table4(tmp_path, executor, capsys):
    args = ["--table", "4", "--preset", "smoke", "--executor", executor, "--results", str(tmp_path), "--set", *TINY]
    assert cli(args) == 0
    df = pd.read_csv(tmp_path / "smoke" / "table4.csv", index_col=0)
    assert df["ours"].notna().all() and ((df["ours"] >= 0) & (df["ours"] <= 100)).all()
    assert ((df["ci_low"] <= df["ours"]) & (df["ours"] <= df["ci_high"])).all()  # per-image counts stored
    assert "t4-" in (tmp_path / "smoke" / "REPORT.md").read_text()
    runs = list((tmp_path / "smoke" / "runs").iterdir())
    trainings = len(_plan([4]).trainings)
    assert len(runs) == trainings  # a training per row, but the multi-scale row's: inference only
    shared = [r for r in runs if len(json.loads((r / "metrics.json").read_text())["evaluations"]) == 2]
    assert len(shared) == 1
    assert (tmp_path / "smoke" / "table4_bars.png").is_file() and (tmp_path / "smoke" / "table4_loss.png").is_file()
    capsys.readouterr()
    # idempotent: a second run submits nothing and reports the same numbers
    assert cli(args) == 0
    assert f"{trainings} done, 0 to run" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "smoke" / "table4.csv", index_col=0)["ours"].tolist() == df["ours"].tolist()
    # REPORT.md's compute line and --plan's "took" read the same RunCost: evaluations included, equal sums
    assert cli([*args, "--plan"]) == 0
    took = [float(h) for h in re.findall(r"took .*?evaluation [0-9.]+ min; ([0-9.e-]+) CPU-hours", capsys.readouterr().out)]
    report = (tmp_path / "smoke" / "REPORT.md").read_text()
    (reported,) = re.findall(rf"([0-9.e-]+) CPU-hours \({trainings} runs", report)
    assert len(took) == trainings and float(reported) == pytest.approx(sum(took), rel=0.01)


def test_failed_job_is_reported_not_raised(tmp_path, capsys, monkeypatch):
    # every training raises inside its job, after every check passed (lr=1e12 alone diverges only some rows)
    def diverge(cfg, out, *args, **kwargs):
        raise TrainingDiverged(f"loss is nan at iteration 2 of {out}")

    monkeypatch.setattr("ifbf.engine.run.run", diverge)  # the debug executor runs the jobs in this process
    args = ["--table", "3", "--preset", "smoke", "--executor", "debug", "--results", str(tmp_path),
            "--set", *TINY]
    assert cli(args) == 1  # exit 1: trainings failed (see --help); the table is still written
    out = capsys.readouterr().out
    assert out.count("failed:") == 6
    status = read_status(next((tmp_path / "smoke" / "runs").iterdir()))
    assert status.state == "failed" and "TrainingDiverged" in status.error
    md = (tmp_path / "smoke" / "table3.md").read_text()
    assert md.count("| failed ") == 6  # every row's ours cell says so
    df = pd.read_csv(tmp_path / "smoke" / "table3.csv", index_col=0)
    assert df["ours"].isna().all() and (df["failed"] == 1).all()


def test_unloadable_weights_are_refused_before_submission(tmp_path, capsys):
    garbage = tmp_path / "garbage.pth"  # a file (so the plan could hash it) that no backbone can load
    garbage.write_text("not a checkpoint")
    args = ["--table", "3", "--preset", "smoke", "--executor", "debug", "--results", str(tmp_path / "r"),
            "--set", *TINY, f"model.weights.resnet18={garbage}"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "model.weights.resnet18" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing written, nothing submitted


@pytest.mark.parametrize(
    "args, message",
    [
        (["--table", "9"], "unknown table 9"),
        (["--table", "two"], "unknown table 'two'"),
        (["--table", "2", "--preset", "huge"], "unknown preset 'huge'"),
        (["--table", "2", "--executor", "kubernetes"], "unknown executor 'kubernetes'"),
        (["--table", "2", "--executor", "local"], "set CITYSCAPES_DATASET"),
        (["--table", "2", "--preset", "smoke", "--executor", "local", "--profile-set", "gpus_per_node=2"],
         "asks for 2 GPU(s) per run but this machine has 0"),
        (["--table", "2", "--preset", "smoke", "--executor", "local", "--slurm", "gpus_per_node=2"],  # its alias
         "asks for 2 GPU(s) per run but this machine has 0"),
        (["--table", "2", "--preset", "smoke", "--profile", "nope"], "unknown cluster profile 'nope'"),
        (["--table", "2", "--seeds", "0"], "--seeds must be >= 1"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, capsys, args, message):
    assert cli([*args, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if "CITYSCAPES" in message:  # the alternative stands on a line of its own, not glued onto a problem
        assert "(to try the pipeline without Cityscapes: the embedded synthetic preset, --preset smoke)" in \
            err.splitlines()


def test_script_help():
    out = subprocess.run([sys.executable, str(REPO / "reproduce.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--paper-only" in out.stdout and "--rerun-failed" in out.stdout


def test_per_class_table_puts_our_row_beside_the_paper(tmp_path):
    from ifbf.data.labels import CLASS_NAMES
    from ifbf.store.rundir import EvalResult, RunDir
    from ifbf.report import records
    from ifbf.report.tables import table_frame

    plan = _plan([1], seeds=2, results=tmp_path)
    ours_trainings = [t for t in plan.trainings.values() if any(c.row.name == "Ours" for c in t.cells)]
    for seed, training in enumerate(ours_trainings):
        rd = RunDir(training.run_dir)
        rd.claim(training.cfg)
        iou = {name: 0.5 + 0.01 * i + 0.1 * seed for i, name in enumerate(CLASS_NAMES)}
        iou["train"] = None  # a class that never occurred in this run
        rd.record_evaluation(training.cfg, training.evals[0], EvalResult(0.6 + 0.1 * seed, iou), main=True)
    df = table_frame(records.collect(plan.tables, plan.preset, 2, tmp_path), load_table(1))
    ours = df.loc["Ours, ifbf (2 seeds)"]
    assert ours["Road"] == pytest.approx(55.0) and ours["S.walk"] == pytest.approx(56.0)  # mean over seeds, in %
    assert ours["Mean"] == pytest.approx(65.0) and pd.isna(ours["Train"])
    delta = df.loc["Δ (Ours, ifbf − paper)"]
    paper = next(r for r in load_table(1).rows if r.name == "Ours").paper
    assert delta["Road"] == pytest.approx(55.0 - paper["road"]) and delta["Mean"] == pytest.approx(65.0 - paper["miou"])
    assert df.loc["LRR [43]", "Road"] == 97.7 and list(df.columns)[-1] == "Mean"
    assert df.loc["DeepLabV3+ (ours)"].isna().all()  # not trained yet, and no paper values


def test_every_command_lists_the_one_set_of_exit_codes():
    """One ExitCode enum for every command (no code meaning two things), listed by both --help texts."""
    assert len(ExitCode.__members__) == len(ExitCode)  # an alias would be one number with two meanings
    for command in ([sys.executable, str(REPO / "reproduce.py"), "--help"], [sys.executable, "-m", "ifbf", "--help"]):
        out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}).stdout
        assert all(f"{code.value:<3d}  {code.meaning}" in out for code in ExitCode), command

"""reproduce.py --preflight and the plan's measured costs: compute shapes, a real preflight job through the
local executor, preflight.json, the plan's arithmetic, failures as one line, finished runs' real cost."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess

import numpy as np
import pytest

from conftest import REPO, TINY_TRAIN
from ifbf.commands.reproduce import cli
from ifbf.data.cityscapes import DataError
from ifbf.data.synth import SynthSpec, write_dataset
from ifbf.engine import measure as measure_mod
from ifbf.engine.measure import UNSTABLE_SPREAD, read_every_split, spread
from ifbf.identity import eval_key, weights_key
from ifbf.experiments import load_preset, load_table
from ifbf.orchestrate.cluster import ClusterProfile, load_profile
from ifbf.config import BASE_CONFIG, load_config
from ifbf.orchestrate.estimate import predict, split_images, took
from ifbf.orchestrate.executors import make_executor
from ifbf.orchestrate.plan import build_plan
from ifbf.orchestrate.preflight import explain, group_shapes, shape_hash, shape_of
from ifbf.orchestrate.preflight_command import _compare_with_the_job
from ifbf.store.measurement import preflight_from_json
from ifbf.store.rundir import RunDir, StepRecord, ValRecord, write_status

TINY = [*(o for o in TINY_TRAIN if not o.startswith("eval.")), "train.iters=6", "runtime.ckpt_every=3"]
CPU = ClusterProfile()


def _plan(tables, seeds=1, results=REPO / "results", extra=()):
    return build_plan([load_table(n) for n in tables], load_preset("smoke"), seeds, results, tuple(extra))


def test_shapes_ignore_what_does_not_change_speed():
    # Table 5 sweeps λ only: nine trainings, one compute shape; seeds and learning rates add none
    assert len(group_shapes(_plan([5]), CPU)) == 1
    assert len(group_shapes(_plan([5], seeds=3, extra=["train.lr=0.02"]), CPU)) == 1
    # Table 2 changes the model in every row; Table 4's trainings differ in augmentation scales and loss (its
    # multi-scale row is inference only: no training of its own)
    assert len(group_shapes(_plan([2]), CPU)) == len(load_table(2).runnable())
    table4, trainings = group_shapes(_plan([4]), CPU), len(_plan([4]).trainings)
    assert len(table4) == trainings < len(load_table(4).runnable())
    assert sum(len(s.trainings) for s in table4.values()) == trainings
    # the profile's GPUs are part of the shape: a measurement on another machine size is not reused
    cfg = next(iter(_plan([5]).trainings.values())).cfg
    assert shape_hash(shape_of(cfg, CPU)) != shape_hash(shape_of(cfg, ClusterProfile(gpus_per_node=2)))



def test_plan_arithmetic_from_a_preflight_record(tmp_path):
    plan = _plan([5], results=tmp_path, extra=["runtime.val_every=20", "runtime.val_images=5"])
    training = next(iter(plan.trainings.values()))
    cfg = training.cfg
    shape = shape_of(cfg, CPU)
    ms, ss = cfg.eval, cfg.eval.__class__(scales=(1.0,), window=cfg.eval.window)
    record = {"date": "2026-11-30 11:00 UTC", "device": "CPU", "setup_s": 4.0, "ckpt_s": 0.5,
              "s_per_it": {"median": 0.25}, "eval": {eval_key(ms): {"s_per_img": 2.0}, eval_key(ss): {"s_per_img": 0.1}}}
    est = predict(training, CPU, {shape_hash(shape): preflight_from_json(record)})
    # 60 iterations x 0.25 s + 12 val images x 2 s (6-scale MS) + 60/20 = 3 validations x 5 images x 0.1 s
    # + 60/20 = 3 checkpoints x 0.5 s + 4 s set-up
    assert cfg.train.iters == 60 and split_images(cfg, "val") == 12 and cfg.runtime.ckpt_every == 20
    assert est.seconds == pytest.approx(4 + 60 * 0.25 + 12 * 2.0 + 3 * 5 * 0.1 + 3 * 0.5)
    assert est.basis == "measured 2026-11-30 on CPU"
    assert predict(training, ClusterProfile(gpus_per_node=1), {shape_hash(shape): preflight_from_json(record)}).seconds is None


def test_wall_clock_follows_the_executor():
    assert make_executor("local", CPU, 1).wall_clock([10, 20, 30, 40])[0] == 100
    assert make_executor("local", CPU, 2).wall_clock([10, 20, 30, 40])[0] == 20 + 40  # rounds wait for their slowest
    assert make_executor("debug", CPU, 2).wall_clock([10, 20, 30, 40])[0] == 100  # debug: one at a time
    # SLURM starts the next job on the first free slot: 10 then 30 on one, 20 then 40 on the other
    assert make_executor("slurm", ClusterProfile(extras={"array_parallelism": 2})).wall_clock([10, 20, 30, 40])[0] == 60


def test_failures_are_named_with_a_fix():
    cause, fix = explain("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert cause == "out of GPU memory" and "batch_size" in fix
    cause, fix = explain("RuntimeError: CUDA error: no kernel image is available for execution on the device")
    assert "InPlace-ABN" in cause and "TORCH_CUDA_ARCH_LIST" in fix


def test_failed_shape_is_one_line_and_exit_code_1(tmp_path, capsys, monkeypatch):
    def oom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr("ifbf.engine.measure.measure", oom)
    code = cli(["--table", "5", "--preset", "smoke", "--executor", "debug", "--results", str(tmp_path),
                "--preflight", "--set", *TINY])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED" in out and "out of GPU memory" in out and "fix:" in out
    (record,) = json.loads((tmp_path / "smoke" / "preflight.json").read_text())["shapes"].values()
    assert record["cause"] == "out of GPU memory"
    assert not (tmp_path / "smoke" / "runs").exists()  # preflight writes into no run directory
    cli(["--table", "5", "--preset", "smoke", "--executor", "debug", "--results", str(tmp_path), "--plan",
         "--set", *TINY])
    assert "preflight failed: out of GPU memory" in capsys.readouterr().out


def test_preflight_then_plan_says_measured(tmp_path, capsys):
    """A real preflight job through the local executor (a separate process), then the plan uses it."""
    args = ["--table", "5", "--preset", "smoke", "--executor", "local", "--results", str(tmp_path), "--set", *TINY]
    assert cli([*args, "--preflight", "--preflight-iters", "3"]) == 0
    data = json.loads((tmp_path / "smoke" / "preflight.json").read_text())
    (record,) = data["shapes"].values()
    assert record["iters"] == 3 and record["device"] == "CPU" and record["torch"]
    assert 0 < record["s_per_it"]["min"] <= record["s_per_it"]["median"] <= record["s_per_it"]["max"]
    assert 0 <= record["data_wait"] < 1 and record["peak_mem_gib"] > 0.05 and record["ckpt_s"] > 0
    assert not list((tmp_path / "smoke" / ".preflight").rglob("*.pth"))  # the timed checkpoint is deleted
    assert record["imgs_per_s"] == pytest.approx(2 / record["s_per_it"]["median"], rel=1e-2)  # batch 2
    trainings = len(_plan([5], extra=TINY).trainings)  # one shape: every λ trains the same model
    assert len(record["rows"]) == trainings and all(e["s_per_img"] > 0 for e in record["eval"].values())
    assert not (tmp_path / "smoke" / "runs").exists()
    capsys.readouterr()
    assert cli([*args, "--plan"]) == 0
    out = capsys.readouterr().out
    assert out.count("measured 20") == trainings and "not measured" not in out and "rough" not in out
    assert "CPU-hours" in out and "wall-clock" in out
    # --status prices the runs that have not started as --plan does (not "0.00 left + N without a speed")
    planned = re.search(r"to run: \d+ training\(s\), ([0-9.]+) CPU-hours", out).group(1)
    assert cli([*args, "--status"]) == 0
    status = capsys.readouterr().out.splitlines()[-1]
    assert f"{planned} CPU-hours left" in status and "without a measured speed" not in status


def test_finished_run_reports_what_it_took(tmp_path):
    rd = RunDir(tmp_path)
    rd.claim(load_config(BASE_CONFIG, TINY))  # batch 2
    rd.append_log(StepRecord(5, {"total": 1.0}, step_s=2.5))
    rd.append_log(ValRecord(5, 0.1, val_s=0.5))
    rd.append_log(StepRecord(10, {"total": 0.9}, step_s=2.0))
    cost = rd.cost()
    assert (cost.train_s, cost.val_s, cost.eval_s, cost.seconds) == pytest.approx((4.5, 0.5, 0.0, 5.0))
    (tmp_path / "metrics.json").write_text(json.dumps({"evaluations": {"k": {"miou": 0.5, "seconds": 3.0}}}))
    write_status(tmp_path, "done", cpus=4)
    cost = rd.cost()
    assert cost.seconds == pytest.approx(8.0) and cost.device_hours == pytest.approx(8.0 * 4 / 3600)
    assert took(cost).startswith("took 0.1 min (training 0.1 min, curves 0.0 min, evaluation 0.1 min; 0.00889 CPU-hours)")
    # an older log without step times: 5 iterations x batch 2 at 3 images/s
    (tmp_path / "log.jsonl").write_text('{"iter": 5, "loss_total": 1.0, "imgs_per_s": 3.0}\n')
    assert rd.cost().train_s == pytest.approx(5 * 2 / 3.0)
    (tmp_path / "log.jsonl").write_text('{"iter": 5, "loss_total": 1.0}\n')
    assert rd.cost() is None and took(None) == "took ? (no timing in its log)"


def test_presets_have_no_constant_estimate():
    for name in ("paper", "smoke"):
        assert "estimate" not in (REPO / "experiments" / "ifbfnet" / "presets" / f"{name}.yaml").read_text()
    assert load_profile("local").gpus_per_node == 0


def test_spread_of_the_timed_iterations():
    steps = [1.0, 1.0, 2.0, 4.0, 4.0]
    figures, relative = spread(steps)
    q1, q3 = np.percentile(steps, [25, 75], method="weibull")  # the (n + 1)p quartiles, computed independently
    assert (figures.q1, figures.median, figures.q3) == (q1, 2.0, q3)
    assert relative == pytest.approx((q3 - q1) / 2.0) and figures.each == steps
    assert spread([2.0, 2.02, 1.98, 2.01, 1.99])[1] < UNSTABLE_SPREAD < relative


def test_a_busy_machine_is_flagged_in_preflight_json_and_the_plan(tmp_path, capsys, monkeypatch):
    """Iterations of one shape that take very different times: the measurement says the machine was busy."""
    real = measure_mod._train_timings

    def busy(*args, **kwargs):
        steps, waits = real(*args, **kwargs)
        return [s * (1 + 3 * (i % 2)) for i, s in enumerate(steps)], waits  # every other one 4x slower

    monkeypatch.setattr(measure_mod, "_train_timings", busy)
    args = ["--table", "5", "--preset", "smoke", "--executor", "debug", "--results", str(tmp_path), "--set", *TINY]
    assert cli([*args, "--preflight", "--preflight-iters", "4"]) == 0
    out = capsys.readouterr().out
    (record,) = json.loads((tmp_path / "smoke" / "preflight.json").read_text())["shapes"].values()
    each = record["s_per_it"]["each"]
    assert len(each) == 4 and record["unstable"] is True and record["spread"] > UNSTABLE_SPREAD
    assert "unstable:" in out and "the machine was busy; rerun --preflight on an idle node" in out
    assert set(record["splits"]) == {"train", "val"}  # a sample of every split the trainings use was read
    trainings = len(_plan([5], extra=TINY).trainings)
    assert cli([*args, "--plan"]) == 0
    assert capsys.readouterr().out.count("the machine was busy") == trainings  # each training of the shape says so


def test_preflight_says_when_it_costs_more_than_the_job(capsys):
    plan = _plan([5], extra=TINY)
    (key,) = group_shapes(plan, CPU)
    records = {key: preflight_from_json({"setup_s": 1.0, "s_per_it": {"median": 0.01}, "ckpt_s": 0.0, "eval": {},
                                         "date": "2026-12-01", "device": "CPU"})}
    _compare_with_the_job(plan, CPU, records, took_s=5.0)
    assert capsys.readouterr().out == ""  # Table 5's trainings of ~1.06 s: more than the 5 s the preflight took
    _compare_with_the_job(plan, CPU, records, took_s=60.0)
    assert "note: this preflight took 1.0 min, more than the 0.2 min its trainings" in capsys.readouterr().out


def test_preflight_reads_every_split_the_trainings_use(tmp_path):
    """A split with no labels fails the preflight (a job would fail only when it got there)."""
    from ifbf.config import BASE_CONFIG, load_config

    root = write_dataset(tmp_path / "synth", SynthSpec(train=2, val=1, test=1, height=32, width=64))
    cfg = load_config(BASE_CONFIG, [*TINY, "data.dataset=cityscapes", f"data.root={root}"])
    test = dataclasses.replace(cfg.eval, split="test")
    assert read_every_split(cfg, [cfg.eval, test]) == {"train": 2, "val": 1, "test": 1}  # test: images only
    for label in root.glob("gtFine/val/*/*_labelIds.png"):
        label.unlink()
    with pytest.raises(DataError, match="has no label"):
        read_every_split(cfg, [cfg.eval])


def test_preflight_scratch_is_not_tracked_by_git():
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", "results/smoke/.preflight/123/123_0_log.out"],
                             cwd=REPO, timeout=30)
    assert ignored.returncode == 0


def test_a_preflight_slurm_rejects_is_one_line_with_the_keys_to_check(tmp_path, capsys, monkeypatch):
    import submitit

    def reject(*args, **kwargs):
        raise submitit.core.utils.FailedJobError("sbatch: error: Invalid generic resource (gres) specification")

    monkeypatch.setattr("ifbf.orchestrate.preflight_command.run_preflight", reject)
    monkeypatch.setattr("ifbf.orchestrate.executors.slurm_available", lambda: True)
    assert cli(["--table", "5", "--preset", "smoke", "--executor", "slurm", "--profile", "local-ci", "--results",
                str(tmp_path), "--preflight", "--set", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reproduce.py: error: SLURM rejected the job: sbatch: error: Invalid generic resource")
    assert "gpus_per_node" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_moved_weights_file_keeps_its_preflight_entry(tmp_path):
    """The shape names the weights by content (sha256), as the run identity does: the same file at another
    path finds its measurement; other content is another file."""
    first, moved, other = tmp_path / "a" / "r18.pth", tmp_path / "b" / "r18.pth", tmp_path / "c" / "r18.pth"
    for path, content in ((first, b"weights"), (moved, b"weights"), (other, b"other weights")):
        path.parent.mkdir()
        path.write_bytes(content)
    cfg = next(iter(_plan([5]).trainings.values())).cfg
    key = weights_key(cfg.model)

    def shape_key(path):
        return shape_hash(shape_of(load_config(BASE_CONFIG, [*_overrides(cfg), f"model.weights.{key}={path}"]), CPU))

    assert shape_key(first) == shape_key(moved) != shape_key(other)


def _overrides(cfg):
    return [f"model.backbone={cfg.model.backbone}", f"model.stem={cfg.model.stem}"]


class _FakeJob:
    job_id, paths = str(2**22 + 12345), type("Paths", (), {"stderr": "/dev/null"})  # a pid that is gone

    def result(self):
        return {"error": "not run", "cause": "not run", "fix": "none"}


def test_preflight_measures_with_the_threads_the_runs_get(tmp_path, monkeypatch):
    """Preflight and the runs take their threads from one place (the executor: a share of the affinity mask),
    not one from os.cpu_count() and the other from the mask."""
    monkeypatch.setattr("ifbf.orchestrate.resources.affinity_cpus", lambda: 6)
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    threads: dict[str, set] = {}

    def submit(self, folder, jobs, max_requeues=None):
        for job in jobs:
            threads.setdefault(type(job).__name__, set()).add(job.threads)
        return [_FakeJob() for _ in jobs]

    monkeypatch.setattr("ifbf.orchestrate.executors.Executor.submit", submit)
    monkeypatch.setattr("ifbf.orchestrate.reproduce._check_environment", lambda *a: None)
    args = ["--table", "4", "--preset", "smoke", "--executor", "local", "--parallel", "2", "--results",
            str(tmp_path), "--set", *TINY]
    cli([*args, "--preflight"])
    cli(args)
    assert threads == {"PreflightJob": {3}, "TrainJob": {3}}


def test_plan_prices_unmeasured_trainings_and_says_how(tmp_path, capsys):
    """No preflight.json: a row whose seed 0 finished prices its next seed as that seed took (RunDir.cost, the
    figure REPORT.md sums); the others take the preset's assumed report.training_hours; each line says which,
    and the total adds them (before: "no estimate" for all of them)."""
    import numpy as np

    from fakeruns import confusions, finish_run
    from ifbf.store.rundir import RunDir, RunState

    smoke = load_preset("smoke", "danet")
    table = load_table(1, "danet")
    first = build_plan([table], smoke, 1, tmp_path / "danet")
    done = next(iter(first.trainings.values()))  # R50 Dilated FCN, seed 0
    rd = finish_run(done, confusions(np.full((4, 19), 0.5), np.full((4, 19), 100, dtype=np.int64)))
    rd.log.write_text(json.dumps({"iter": done.cfg.train.iters, "step_s": 36.0}) + "\n")
    (done.run_dir / "checkpoint.pth").write_bytes(b"")
    took_hours = RunDir(done.run_dir).cost().device_hours
    args = ["--paper", "danet", "--table", "1", "--preset", "smoke", "--executor", "local", "--plan",
            "--results", str(tmp_path), "--seeds", "2"]
    assert cli(args) == 0
    lines = capsys.readouterr().out.splitlines()
    seed1 = next(line for line in lines if "DANet T1 R50 Dilated FCN s1" in line)
    assert f"~{took_hours:.3g} device-hours (as its seed 0 took; measure with --preflight)" in seed1
    others = [line for line in lines if " todo " in line and "R50 Dilated FCN" not in line]
    assert len(others) == 14 and all("ASSUMED by preset smoke's report.training_hours" in line for line in others)
    total = took_hours + 14 * smoke.report.training_hours
    assert f"to run, not measured: 15 training(s), {total:.3g} device-hours" in lines[-1]
    assert "no estimate" not in "\n".join(lines) and smoke.report.training_hours_source.split()[0] in lines[-1]

"""reproduce.py --preflight and the plan's measured costs: compute shapes, a real preflight job through the
local executor, preflight.json, the plan's arithmetic, failures as one line, finished runs' real cost."""

from __future__ import annotations

import json
import re

import pytest

from conftest import REPO, TINY_TRAIN
from ifbf.commands.reproduce import cli
from ifbf.identity import eval_key, weights_key
from ifbf.experiments import load_preset, load_table
from ifbf.orchestrate.cluster import SlurmProfile, load_profile
from ifbf.config import BASE_CONFIG, load_config
from ifbf.orchestrate.estimate import predict, split_images, took
from ifbf.orchestrate.executors import make_executor
from ifbf.orchestrate.plan import build_plan
from ifbf.orchestrate.preflight import explain, group_shapes, shape_hash, shape_of
from ifbf.rundir import RunDir, write_status

TINY = [*(o for o in TINY_TRAIN if not o.startswith("eval.")), "train.iters=6", "runtime.ckpt_every=3"]
CPU = SlurmProfile()


def _plan(tables, seeds=1, results=REPO / "results", extra=()):
    return build_plan([load_table(n) for n in tables], load_preset("smoke"), seeds, results, tuple(extra))


def test_shapes_ignore_what_does_not_change_speed():
    # Table 5 sweeps λ only: nine trainings, one compute shape; seeds and learning rates add none
    assert len(group_shapes(_plan([5]), CPU)) == 1
    assert len(group_shapes(_plan([5], seeds=3, extra=["train.lr=0.02"]), CPU)) == 1
    # Table 2 changes the model in every row; Table 4's rows differ in augmentation scales and loss
    assert len(group_shapes(_plan([2]), CPU)) == 10
    table4 = group_shapes(_plan([4]), CPU)
    assert len(table4) == 3 and sum(len(s.trainings) for s in table4.values()) == 3
    # the profile's GPUs are part of the shape: a measurement on another machine size is not reused
    cfg = next(iter(_plan([5]).trainings.values())).cfg
    assert shape_hash(shape_of(cfg, CPU)) != shape_hash(shape_of(cfg, SlurmProfile(gpus_per_node=2)))



def test_plan_arithmetic_from_a_preflight_record(tmp_path):
    plan = _plan([5], results=tmp_path, extra=["runtime.val_every=20", "runtime.val_images=5"])
    training = next(iter(plan.trainings.values()))
    cfg = training.cfg
    shape = shape_of(cfg, CPU)
    ms, ss = cfg.eval, cfg.eval.__class__(scales=(1.0,), window=cfg.eval.window)
    record = {"date": "2026-11-30 11:00 UTC", "device": "CPU", "setup_s": 4.0, "ckpt_s": 0.5,
              "s_per_it": {"median": 0.25}, "eval": {eval_key(ms): {"s_per_img": 2.0}, eval_key(ss): {"s_per_img": 0.1}}}
    est = predict(training, CPU, {shape_hash(shape): record})
    # 60 iterations x 0.25 s + 12 val images x 2 s (6-scale MS) + 60/20 = 3 validations x 5 images x 0.1 s
    # + 60/20 = 3 checkpoints x 0.5 s + 4 s set-up
    assert cfg.train.iters == 60 and split_images(cfg, "val") == 12 and cfg.runtime.ckpt_every == 20
    assert est.seconds == pytest.approx(4 + 60 * 0.25 + 12 * 2.0 + 3 * 5 * 0.1 + 3 * 0.5)
    assert est.basis == "measured 2026-11-30 on CPU"
    assert predict(training, SlurmProfile(gpus_per_node=1), {shape_hash(shape): record}).seconds is None


def test_wall_clock_follows_the_executor():
    assert make_executor("local", CPU, 1).wall_clock([10, 20, 30, 40])[0] == 100
    assert make_executor("local", CPU, 2).wall_clock([10, 20, 30, 40])[0] == 20 + 40  # rounds wait for their slowest
    assert make_executor("debug", CPU, 2).wall_clock([10, 20, 30, 40])[0] == 100  # debug: one at a time
    # SLURM starts the next job on the first free slot: 10 then 30 on one, 20 then 40 on the other
    assert make_executor("slurm", SlurmProfile(array_parallelism=2)).wall_clock([10, 20, 30, 40])[0] == 60


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
    assert len(record["rows"]) == 10 and all(e["s_per_img"] > 0 for e in record["eval"].values())
    assert not (tmp_path / "smoke" / "runs").exists()
    capsys.readouterr()
    assert cli([*args, "--plan"]) == 0
    out = capsys.readouterr().out
    assert out.count("measured 20") == 10 and "not measured" not in out and "rough" not in out
    assert "CPU-hours" in out and "wall-clock" in out
    # --status prices the runs that have not started as --plan does (not "0.00 left + N without a speed")
    planned = re.search(r"to run: \d+ training\(s\), ([0-9.]+) CPU-hours", out).group(1)
    assert cli([*args, "--status"]) == 0
    status = capsys.readouterr().out.splitlines()[-1]
    assert f"{planned} CPU-hours left" in status and "without a measured speed" not in status


def test_finished_run_reports_what_it_took(tmp_path):
    rd = RunDir(tmp_path)
    rd.claim(load_config(BASE_CONFIG, TINY))  # batch 2
    rd.append_log({"iter": 5, "loss_total": 1.0, "step_s": 2.5})
    rd.append_log({"iter": 5, "val_miou": 0.1, "val_s": 0.5})
    rd.append_log({"iter": 10, "loss_total": 0.9, "step_s": 2.0})
    cost = rd.cost()
    assert (cost.train_s, cost.val_s, cost.eval_s, cost.seconds) == pytest.approx((4.5, 0.5, 0.0, 5.0))
    (tmp_path / "metrics.json").write_text(json.dumps({"evaluations": {"k": {"seconds": 3.0}}}))
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
        assert "estimate" not in (REPO / "experiments" / "presets" / f"{name}.yaml").read_text()
    assert load_profile("local").gpus_per_node == 0


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

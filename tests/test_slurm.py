"""Against a real slurmctld (slurm/local-up.sh; .ci/run starts it): reproduce.py's SLURM path, job
arrays, preemption -> checkpoint -> requeue -> identical result, cancellation, GPU requests, and DDP
through SLURM tasks. Skipped where no cluster answers."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY_TRAIN
from ifbf.orchestrate.cluster import load_profile
from ifbf.config import BASE_CONFIG, load_config
from ifbf.store.rundir import RunDir
from ifbf.engine.run import run
from ifbf.orchestrate.executors import make_executor
from ifbf.orchestrate.jobs import TrainJob
from ifbf.store.rundir import read_status
from ifbf.orchestrate.plan import Training
from ifbf.commands.reproduce import cli
from ifbf.orchestrate.reproduce import _wait
from ifbf.orchestrate.slurm import sacct, slurm_available

pytestmark = [pytest.mark.slurm, pytest.mark.skipif(not slurm_available(), reason="no local SLURM (slurm/local-up.sh)")]

TINY = [*(o for o in TINY_TRAIN if not o.startswith("eval.")), "train.iters=6", "runtime.ckpt_every=3"]


def _submit(folder: Path, job, *overrides: str):
    [submitted] = make_executor("slurm", load_profile("local-ci", list(overrides))).submit(folder, [job])
    return submitted


def _wait_for_iteration(run_dir: Path, iteration: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = RunDir(run_dir).read_log() if (run_dir / "log.jsonl").is_file() else []
        if log and log[-1].iter >= iteration:
            return
        time.sleep(0.2)
    raise AssertionError(f"{run_dir} did not reach iteration {iteration}")


def test_reproduce_submits_a_job_array_and_collects_the_table(tmp_path, capsys):
    args = ["--table", "4", "--preset", "smoke", "--executor", "slurm", "--profile", "local-ci",
            "--results", str(tmp_path), "--set", *TINY]
    assert cli(args) == 0
    df = pd.read_csv(tmp_path / "smoke" / "table4.csv", index_col=0)
    assert df["ours"].notna().all()
    statuses = [read_status(p) for p in (tmp_path / "smoke" / "runs").iterdir()]
    assert [s.state for s in statuses] == ["done"] * 3
    assert all("_" in s.job_id for s in statuses)  # array tasks: <array id>_<index>
    assert len({s.job_id.split("_")[0] for s in statuses}) == 1  # one array for the three rows
    capsys.readouterr()
    assert cli(args) == 0 and "3 done, 0 to run" in capsys.readouterr().out


def test_preempted_job_is_requeued_and_ends_like_an_uninterrupted_run(tmp_path):
    overrides = [*TINY_TRAIN, "train.iters=40", "runtime.ckpt_every=1000", "runtime.log_every=1"]
    cfg = load_config(BASE_CONFIG, overrides)
    torch.set_num_threads(1)  # as the job, which takes its threads from local-ci's cpus_per_task=1 (sums differ)
    reference = run(cfg, tmp_path / "reference", progress=False)

    run_dir = tmp_path / "preempted"
    job = _submit(tmp_path / "jobs", TrainJob.of(cfg, run_dir, []))
    _wait_for_iteration(run_dir, 5)
    job._interrupt()  # SIGTERM then USR2, as a preemption
    result = job.result()
    log = (Path(job.paths.stdout).read_text() if Path(job.paths.stdout).exists() else "")
    stderr = Path(job.paths.stderr).read_text()
    assert "resuming" in log + stderr, stderr[-2000:]
    assert result["miou"] == reference["miou"] and result["iou"] == reference["iou"]
    a = torch.load(tmp_path / "reference" / "checkpoint.pth", weights_only=False)["model"]
    b = torch.load(run_dir / "checkpoint.pth", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_status(run_dir).state == "done"
    # --status sees the requeue: sacct keeps one record per start of the job
    records = sacct([str(job.job_id)])[str(job.job_id)]  # the last may still read running for a moment
    assert [r["state"] for r in records][0] == "requeued" and len(records) == 2


def test_cancelled_job_is_failed_and_nothing_is_corrupted(tmp_path):
    cfg = load_config(BASE_CONFIG, [*TINY_TRAIN, "train.iters=400", "runtime.ckpt_every=2", "runtime.log_every=1"])
    run_dir = tmp_path / "run"
    job = _submit(tmp_path / "jobs", TrainJob.of(cfg, run_dir, []))
    _wait_for_iteration(run_dir, 3)
    job.cancel(check=True)
    training = Training(cfg, run_dir, [cfg.eval])
    assert _wait(training, job) == "failed"
    assert training.status() == "failed"
    state = torch.load(run_dir / "checkpoint.pth", weights_only=False)  # still a readable checkpoint
    assert 2 <= state["iter"] < 400
    assert not (run_dir / "metrics.json").exists()
    assert RunDir(run_dir).config() == cfg


def test_gpu_request_on_a_gpu_less_cluster_is_one_clear_error(tmp_path, capsys):
    if "gpu" in subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True).stdout:
        pytest.skip("the local node advertises GPUs")
    args = ["--table", "3", "--preset", "smoke", "--executor", "slurm", "--profile", "local-ci",
            "--slurm", "gpus_per_node=1", "--results", str(tmp_path), "--set", *TINY]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "SLURM rejected the job" in err and "gpus_per_node" in err and "Traceback" not in err
    assert not any((tmp_path / "smoke" / "runs").glob("*/metrics.json"))


def test_two_slurm_tasks_train_like_one_process(tmp_path):
    pytest.importorskip("inplace_abn")
    from test_distributed import DDP_RECIPE, assert_same_training

    one = load_config(BASE_CONFIG, [*DDP_RECIPE, "data.batch_size=4"])
    two = load_config(BASE_CONFIG, [*DDP_RECIPE, "data.batch_size=2"])
    run(one, tmp_path / "one", progress=False)
    job = _submit(tmp_path / "jobs", TrainJob.of(two, tmp_path / "two", []), "tasks_per_node=2")
    job.results()
    assert json.loads((tmp_path / "two" / "env.json").read_text())["world_size"] == 2
    assert_same_training(tmp_path / "one", tmp_path / "two")


def test_sbatch_template_runs_one_distributed_run(tmp_path):
    """slurm/train.sbatch (without reproduce.py): two SLURM tasks train what one process trains."""
    pytest.importorskip("inplace_abn")
    import os
    import sys

    from test_distributed import DDP_RECIPE, assert_same_training

    template = (Path(__file__).resolve().parents[1] / "slurm" / "train.sbatch").read_text()
    script = tmp_path / "train.sbatch"  # the same script without the GPU request (the test node has none)
    script.write_text("\n".join(line for line in template.splitlines() if "--gpus-per-node" not in line) + "\n")
    run(load_config(BASE_CONFIG, [*DDP_RECIPE, "data.batch_size=4"]), tmp_path / "one", progress=False)
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["sbatch", "--wait", "--partition=debug", "--ntasks-per-node=2", "--cpus-per-task=1", "--mem=4G",
         "--time=20", f"--output={tmp_path}/slurm-%j.out", str(script), str(tmp_path / "two"),
         *DDP_RECIPE, "data.batch_size=2"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    log = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert result.returncode == 0, result.stderr + log[-3000:]
    assert json.loads((tmp_path / "two" / "env.json").read_text())["world_size"] == 2
    assert_same_training(tmp_path / "one", tmp_path / "two")

"""A new executor is one section of ifbf/orchestrate/executors.py, a profile and this test (issue 26): PBS,
driven through a fake submitit plugin registered where submitit looks its executors up. The profile's
resources reach the job as PBS parameters (and the job sees them as PBS sets them: NCPUS), its requeue options
reach the plugin, the job's PBS_JOBID reaches the run lock (a job requeued onto another node takes over its
own lock), and --status asks no sacct for its jobs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

import pytest
import submitit
from submitit.core.core import Job
from submitit.local.debug import DebugExecutor, DebugJob

from conftest import TINY_TRAIN
from ifbf.commands.reproduce import cli
from ifbf.config import BASE_CONFIG, ConfigError, load_config
from ifbf.orchestrate.cluster import load_profile
from ifbf.orchestrate.executors import make_executor
from ifbf.orchestrate.jobs import Busy, TrainJob
from ifbf.orchestrate.status import Target, collect
from ifbf.store.rundir import Submission, RunDir, read_status, write_status


class FakePbsJob(DebugJob):
    """A PBS job, run in this process when its result is asked for, in the environment PBS gives a job."""

    def __init__(self, folder: Path, submission: submitit.helpers.DelayedSubmission, job_id: str,
                 env: dict[str, str]) -> None:
        Job.__init__(self, folder=folder, job_id=job_id)
        self._submission, self.cancelled = submission, False
        outside = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # not inside a SLURM job
        self.environ = {**outside, "SUBMITIT_DEBUG_JOB_ID": job_id, **env}


class FakePbsExecutor(DebugExecutor):
    """What a submitit plugin for PBS does with submitit's parameters: the generic ones become a qsub resource
    list (select, walltime), ``pbs_<key>`` its own options; ``max_num_timeout`` comes to its constructor."""

    made: ClassVar[list[FakePbsExecutor]] = []
    job_ids: ClassVar[list[str]] = []  # the ids qsub hands out, in turn

    def __init__(self, folder: str | Path, max_num_timeout: int = 3) -> None:
        super().__init__(folder)
        self.max_num_timeout = max_num_timeout
        FakePbsExecutor.made.append(self)

    @classmethod
    def name(cls) -> str:
        return "pbs"

    @classmethod
    def _valid_parameters(cls) -> set[str]:
        return {"queue", "account", "select", "walltime"}

    def _convert_parameters(self, params: dict) -> dict:
        tasks = params.get("tasks_per_node", 1)
        chunk = f"1:ncpus={params['cpus_per_task'] * tasks}:mem={params['mem_gb']}gb:mpiprocs={tasks}"
        if params.get("gpus_per_node"):
            chunk += f":ngpus={params['gpus_per_node']}"
        minutes = params["timeout_min"]
        return {"select": chunk, "walltime": f"{minutes // 60:02d}:{minutes % 60:02d}:00"}

    def _internal_process_submissions(self, delayed_submissions: list) -> list[Job]:
        ncpus = self.parameters["select"].split("ncpus=")[1].split(":")[0]
        jobs = []
        for submission in delayed_submissions:
            job_id = FakePbsExecutor.job_ids.pop(0)
            jobs.append(FakePbsJob(self.folder, submission, job_id, {"PBS_JOBID": job_id, "NCPUS": ncpus}))
        return jobs


@pytest.fixture
def pbs_plugin(monkeypatch):
    """The fake plugin, registered as an installed one is (submitit's executor list)."""
    known = dict(submitit.core.plugins.get_executors())
    monkeypatch.setattr(submitit.core.plugins, "get_executors", lambda: {**known, "pbs": FakePbsExecutor})
    FakePbsExecutor.made, FakePbsExecutor.job_ids = [], []
    return FakePbsExecutor


def _on_path(*commands: str):
    """shutil.which as on a PBS login node that has ``commands``."""
    return lambda name, *args, **kwargs: f"/opt/pbs/bin/{name}" if name in commands else None


def test_resources_and_requeue_options_reach_the_plugin_as_pbs_parameters(pbs_plugin, tmp_path, monkeypatch):
    profile = load_profile("pbs", ["cpus_per_task=3", "mem_gb=12", "timeout_min=90", "account=proj7",
                                   "max_requeues=5"])
    executor = make_executor("pbs", profile)
    with monkeypatch.context() as login_node:
        login_node.setattr(shutil, "which", _on_path("qsub", "qstat"))
        assert executor.problems() == []
        login_node.setattr(shutil, "which", _on_path())
        assert executor.problems() == ["--executor pbs: no qsub here; run from a PBS login node, or use "
                                       "--executor local"]
    pbs_plugin.job_ids = ["11.server", "12.server"]
    cfg = load_config(BASE_CONFIG, TINY_TRAIN)
    [job] = executor.submit(tmp_path / "jobs", [TrainJob.of(cfg, tmp_path / "run", [], executor.threads_per_job())])
    [plugin] = pbs_plugin.made
    # pbs.yaml: queue gpu, 2 GPUs, one process per GPU
    assert plugin.parameters == {"queue": "gpu", "account": "proj7", "walltime": "01:30:00",
                                 "select": "1:ncpus=6:mem=12gb:mpiprocs=2:ngpus=2"}
    assert plugin.max_num_timeout == 5  # the profile's max_requeues (the plugin's own default is 3)
    assert executor.record(job) == Submission("pbs", "11.server", str(job.paths.stderr), None)
    executor.submit(tmp_path / "preflight", [TrainJob.of(cfg, tmp_path / "run", [])], max_requeues=0)
    assert pbs_plugin.made[-1].max_num_timeout == 0  # preflight jobs are never requeued


def test_a_requeued_pbs_job_takes_over_its_own_lock_on_another_node(pbs_plugin, tmp_path, capsys, monkeypatch):
    """The issue's failure: a PBS job requeued onto another node within lock_stale_s found its own lock
    "held" and returned without training. Its PBS_JOBID now reaches the lock."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    executor = make_executor("pbs", load_profile("pbs", ["gpus_per_node=0", "cpus_per_task=2"]))
    run_dir = tmp_path / "run"
    lock = RunDir(run_dir).train_lock().path
    lock.parent.mkdir(parents=True)
    # the job trained on node-a until it was preempted; its lock's heartbeat is fresh
    lock.write_text(json.dumps({"host": "node-a", "pid": 1, "job_id": "4242.server", "token": "t"}))
    job = TrainJob.of(load_config(BASE_CONFIG, TINY_TRAIN), run_dir, [], executor.threads_per_job())

    pbs_plugin.job_ids = ["4243.server", "4242.server"]
    [other] = executor.submit(tmp_path / "jobs", [job])  # another job: the lock is not its own
    assert isinstance(other.result(), Busy) and "job 4242.server" in other.result().reason
    [requeued] = executor.submit(tmp_path / "jobs", [job])  # the same job after its requeue, on this node
    write_status(run_dir, "submitted", executor.record(requeued))
    metrics = requeued.result()
    assert not isinstance(metrics, Busy) and 0.0 <= metrics["miou"] <= 1.0
    out, err = capsys.readouterr()
    assert "it belongs to this job 4242.server before its requeue (on node-a)" in err
    assert "allocation: 2 CPU(s) (NCPUS=2, affinity mask 8)" in out  # the job's CPUs, as PBS tells them
    assert read_status(run_dir).state == "done" and read_status(run_dir).job_id == "4242.server"


def test_status_asks_no_sacct_for_a_pbs_job(tmp_path, monkeypatch):
    cfg = load_config(BASE_CONFIG, [*TINY_TRAIN, "train.iters=100"])
    runs = {name: tmp_path / name for name in ("pbsrun", "pbsgone", "slurmrun")}
    for name, path in runs.items():
        RunDir(path).claim(cfg)
    write_status(runs["pbsrun"], "running", executor="pbs", job_id="4242.server", host="node-a")
    write_status(runs["pbsgone"], "running", executor="pbs", job_id="4243.server", host="node-a")
    write_status(runs["slurmrun"], "running", executor="slurm", job_id="77", host="node-a")
    commands = []

    def run(cmd, **kwargs):
        commands.append(cmd)
        if cmd[0] == "sacct":
            return subprocess.CompletedProcess(cmd, 0, "77|RUNNING|0:0|60|billing=1,cpu=4,node=1\n", "")
        finished = cmd[0] == "qstat" and cmd[1] == "4243.server"
        return subprocess.CompletedProcess(cmd, 35 if finished else 0, "", "")  # PBS Pro: 35, job has finished

    with monkeypatch.context() as login_node:
        login_node.setattr(shutil, "which", _on_path("sacct", "qstat"))
        login_node.setattr(subprocess, "run", run)
        lines = {ln.label: ln for ln in collect([Target(p, n, 100) for n, p in runs.items()])}
    sacct = [c for c in commands if c[0] == "sacct"]
    assert len(sacct) == 1 and sacct[0][sacct[0].index("-j") + 1] == "77"  # SLURM's job only
    assert sorted(c[1] for c in commands if c[0] == "qstat") == ["4242.server", "4243.server"]
    assert lines["pbsrun"].state == "running" and lines["pbsgone"].state == "stopped"
    assert lines["slurmrun"].state == "running" and lines["slurmrun"].spent_h == pytest.approx(60 * 4 / 3600)


def test_profile_keys_belong_to_their_scheduler(tmp_path, capsys):
    pbs, slurm = load_profile("pbs"), load_profile("example")
    assert make_executor("pbs", pbs).options.queue == "gpu"
    with pytest.raises(ConfigError, match="profile key 'queue' is for --executor pbs, not --executor slurm"):
        make_executor("slurm", pbs)
    with pytest.raises(ConfigError, match="profile key 'partition' is for --executor slurm, not --executor pbs"):
        make_executor("pbs", slurm)
    with pytest.raises(ConfigError, match="unknown profile key 'queu'.*pbs: queue, account"):
        make_executor("pbs", load_profile("pbs", ["queu=long"]))
    assert make_executor("local", pbs).params() == make_executor("local", load_profile("local", [
        "timeout_min=1440", "gpus_per_node=2"])).params()  # local runs it here: only the generic keys apply
    assert cli(["--table", "4", "--preset", "smoke", "--executor", "slurm", "--profile", "pbs", "--plan",
                "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "profile key 'queue' is for --executor pbs" in err and "Traceback" not in err


def test_without_the_plugin_pbs_says_what_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", _on_path("qsub", "qstat"))
    [problem] = make_executor("pbs", load_profile("pbs")).problems()
    assert "submitit knows no 'pbs' executor" in problem and "plugin" in problem
    assert "pbs" not in submitit.core.plugins.get_executors()


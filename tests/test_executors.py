"""What a scheduler tells ifbf and what ifbf tells it, each owned by its executor (issue 26), checked against
submitit's own reading of the same things: a SLURM job's id and task ranks as submitit's SlurmJobEnvironment
reads them, and a SLURM profile's keys as the sbatch parameters of submitit's SlurmExecutor."""

from __future__ import annotations

import pytest
import yaml
from submitit.slurm.slurm import SlurmJobEnvironment

from ifbf.orchestrate.cluster import PROFILES, load_profile
from ifbf.orchestrate.executors import export_launched_ranks, granted_cpus, make_executor, this_job

SRUN_TASK = {"SLURM_JOB_ID": "80", "SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
             "MASTER_ADDR": "node-a"}
ARRAY_TASK = {"SLURM_JOB_ID": "81", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"}


@pytest.mark.parametrize("env", [SRUN_TASK, ARRAY_TASK], ids=["srun task", "array task"])
def test_a_slurm_jobs_id_is_the_one_submitit_records(env, monkeypatch):
    """The lock's job id must equal the job id submitit gave the job at submission (status.json's)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert this_job(env) == SlurmJobEnvironment().job_id
    assert this_job({}) is None and this_job({"PBS_JOBID": "12.server"}) == "12.server"


def test_srun_task_ranks_become_torchruns(monkeypatch):
    for key, value in SRUN_TASK.items():
        monkeypatch.setenv(key, value)
    env = dict(SRUN_TASK)
    export_launched_ranks(env)
    reference = SlurmJobEnvironment()
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == (
        str(reference.global_rank), str(reference.num_tasks), str(reference.local_rank))
    torchrun = {**SRUN_TASK, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    export_launched_ranks(torchrun)  # torchrun inside an allocation: its own variables win
    assert (torchrun["RANK"], torchrun["WORLD_SIZE"]) == ("0", "2")
    one = {k: v for k, v in SRUN_TASK.items() if k != "MASTER_ADDR"}
    export_launched_ranks(one)  # sbatch's batch step without a rendezvous: one process
    assert "RANK" not in one and "WORLD_SIZE" not in one


def test_cpus_granted_are_read_from_the_scheduler_that_set_them():
    assert granted_cpus({"SLURM_CPUS_PER_TASK": "8"}) == ("SLURM_CPUS_PER_TASK", "8")
    assert granted_cpus({"NCPUS": "6"}) == ("NCPUS", "6")
    assert granted_cpus({}) is None and granted_cpus({"SLURM_CPUS_PER_TASK": "8(x2)"}) is None


def test_a_slurm_profiles_keys_reach_sbatch(tmp_path):
    raw = yaml.safe_load((PROFILES / "example.yaml").read_text())
    executor = make_executor("slurm", load_profile("example"))
    sbatch = executor._submitit(tmp_path, None)._executor  # submitit's SlurmExecutor, as submit() builds it
    assert sbatch.parameters == {
        "partition": raw["partition"], "gpus_per_node": raw["gpus_per_node"], "ntasks_per_node": raw["gpus_per_node"],
        "cpus_per_task": raw["cpus_per_task"], "mem": f"{raw['mem_gb']}GB", "time": raw["timeout_min"], "nodes": 1,
        "array_parallelism": raw["array_parallelism"], "signal_delay_s": raw["signal_delay_s"]}
    assert sbatch.max_num_timeout == raw["max_requeues"]
    assert executor._submitit(tmp_path, 0)._executor.max_num_timeout == 0


def test_local_jobs_take_only_the_generic_keys_of_a_slurm_profile(tmp_path):
    """`--executor local --profile example`: the job runs here, with the profile's time limit and GPUs."""
    local = make_executor("local", load_profile("example"))._submitit(tmp_path, None)._executor
    raw = yaml.safe_load((PROFILES / "example.yaml").read_text())
    assert {k: v for k, v in local.parameters.items() if k != "setup"} == {
        "timeout_min": raw["timeout_min"], "gpus_per_node": raw["gpus_per_node"],
        "tasks_per_node": raw["gpus_per_node"], "nodes": 1}
    assert local.max_num_timeout == raw["max_requeues"]

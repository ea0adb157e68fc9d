"""Jobs sized to their allocation (issue 12, section 6): threads and loader workers follow the CPUs the
scheduler granted (SLURM_CPUS_PER_TASK, as the executor reads it) and the affinity mask, never the node's core
count, and the job says so."""

from __future__ import annotations

import os

import pytest
import torch

from conftest import TINY_TRAIN
from ifbf.config import BASE_CONFIG, load_config
from ifbf.orchestrate import resources
from ifbf.orchestrate.executors import granted_cpus
from ifbf.orchestrate.jobs import TrainJob
from ifbf.store.rundir import read_status


@pytest.fixture
def node_of_64_cores_with_3_allowed(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5, 6})
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("NCPUS", raising=False)


def test_affinity_mask_not_core_count(node_of_64_cores_with_3_allowed):
    a = resources.size_to(requested_workers=4)
    assert (a.cpus, a.threads, a.workers) == (3, 3, 2)
    assert "affinity mask 3" in a.source


def test_slurm_cpus_per_task_wins_when_smaller(node_of_64_cores_with_3_allowed, monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")  # a 1-CPU job on a node that does not bind CPUs
    a = resources.size_to(requested_workers=4, granted=granted_cpus())
    assert (a.cpus, a.threads, a.workers) == (1, 1, 0)
    assert resources.size_to(requested_workers=4).cpus == 3  # nothing granted: the mask
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")  # never more than the mask allows
    assert resources.size_to(4, granted=granted_cpus()).cpus == 3


def test_local_jobs_split_the_submitters_mask(node_of_64_cores_with_3_allowed):
    assert resources.share_per_job(parallel=2) == 1
    assert resources.share_per_job(parallel=1) == 3
    assert resources.size_to(4, share=1).threads == 1


def test_job_sets_threads_from_its_allocation_and_logs_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    before = torch.get_num_threads()
    try:
        cfg = load_config(BASE_CONFIG, [*TINY_TRAIN, "train.iters=3", "runtime.workers=4"])
        TrainJob.of(cfg, tmp_path / "run", [])()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "allocation: 1 CPU(s) (SLURM_CPUS_PER_TASK=1, affinity mask 1) -> torch threads 1, loader workers 0" \
        in capsys.readouterr().out
    status = read_status(tmp_path / "run")
    assert status.state == "done"

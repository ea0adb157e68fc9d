"""One decision of a run's state (issue 17): the plan (what reproduce.py submits) and --status (what it shows)
agree on every combination of status.json x lock x process/job, and the decision is the one written below
independently of ``rundir.run_state`` (``expected``)."""

from __future__ import annotations

import json
import os
import socket

import pytest

from conftest import TINY_TRAIN
from ifbf.config import BASE_CONFIG, load_config
from ifbf.identity import config_hash, eval_key
from ifbf.orchestrate.plan import Training
from ifbf.orchestrate.status import Target, collect
from ifbf.store.rundir import EvalResult, RunDir, RunState, StepRecord, write_status

CFG = load_config(BASE_CONFIG, [*TINY_TRAIN, "train.iters=10"])
DEAD_PID, OTHER_USERS_PID = 2**22 + 12345, 2**22 + 4242  # kill(pid, 0): ProcessLookupError / PermissionError
JOB_ID = "77"

RECORDED = [None, "submitted", "running", "requeued", "done", "failed"]
LOCKS = ["none", "live", "stale", "mine"]
# how the recorded job can be found: a local process (alive, gone, another user's, on another host) or a
# SLURM job (still queued or running; gone)
JOBS = ["pid alive", "pid dead", "pid PermissionError", "other host", "slurm active", "slurm gone"]


def _fake_kill(real_kill):
    def kill(pid: int, sig: int) -> None:
        if pid == DEAD_PID:
            raise ProcessLookupError(pid)
        if pid == OTHER_USERS_PID:
            raise PermissionError(pid)
        real_kill(pid, sig)
    return kill


def _record(job: str) -> dict:
    here = socket.gethostname()
    return {"pid alive": dict(executor="local", pid=os.getpid(), host=here),
            "pid dead": dict(executor="local", pid=DEAD_PID, host=here),
            "pid PermissionError": dict(executor="local", pid=OTHER_USERS_PID, host=here),
            "other host": dict(executor="local", pid=DEAD_PID, host="elsewhere"),
            "slurm active": dict(executor="slurm", job_id=JOB_ID, pid=None, host=here),
            "slurm gone": dict(executor="slurm", job_id=JOB_ID, pid=None, host=here)}[job]


def expected(complete: bool, recorded: str | None, lock: str, job: str) -> RunState:
    """The rule, restated: done wins; a live lock of another process means someone has it; else the record
    decides, and an active record whose process/job is gone is stopped (a PermissionError is a live process)."""
    if complete:
        return RunState.DONE
    if lock == "live":
        return RunState(recorded) if recorded in ("submitted", "running", "requeued") else RunState.RUNNING
    if recorded in (None, "done"):
        return RunState.TODO
    if recorded == "failed":
        return RunState.FAILED
    alive = job in ("pid alive", "pid PermissionError", "other host", "slurm active")
    return RunState(recorded) if alive else RunState.STOPPED


@pytest.mark.parametrize("complete", [False, True])
@pytest.mark.parametrize("recorded", RECORDED)
@pytest.mark.parametrize("lock", LOCKS)
@pytest.mark.parametrize("job", JOBS)
def test_plan_and_status_agree(tmp_path, monkeypatch, complete, recorded, lock, job):
    monkeypatch.setattr("ifbf.store.runlock.os.kill", _fake_kill(os.kill))
    monkeypatch.setattr("ifbf.orchestrate.executors.slurm_job_active", lambda job_id: job == "slurm active")
    rd = RunDir(tmp_path / config_hash(CFG))
    rd.claim(CFG)
    if complete:
        rd.append_log(StepRecord(10, {"total": 1.0}, step_s=0.1))
        rd.record_evaluation(CFG, CFG.eval, EvalResult(0.5, {}), main=True)
    if recorded:
        write_status(rd.path, recorded, **_record(job))
    mine = None
    if lock in ("live", "mine"):
        held = rd.train_lock().acquire()  # this (live) process; "mine": the caller holds it
        mine = held.token if lock == "mine" else None
    elif lock == "stale":
        rd.train_lock().path.write_text(json.dumps({"host": socket.gethostname(), "pid": DEAD_PID, "token": "t"}))

    training = Training(CFG, rd.path, [CFG.eval])
    target = Target(rd.path, "t", CFG.train.iters, frozenset({eval_key(CFG.eval)}), CFG.runtime.lock_stale_s,
                    training.run_hash)
    sacct = {JOB_ID: [{"state": "running" if job == "slurm active" else "cancelled", "elapsed_s": 0, "gpus": 0,
                       "cpus": 1}]} if job.startswith("slurm") else {}
    want = expected(complete, recorded, lock if lock != "mine" else "none", job)
    try:
        assert training.status(mine=mine) is want
        (seen_with_sacct,) = collect([target], query=lambda ids: sacct)
        (seen_without,) = collect([target], query=lambda ids: {})  # sacct does not list it (yet): squeue asked
        # --status runs in another process: a lock the orchestrator holds is a live lock there
        shown = expected(complete, recorded, "live" if lock == "mine" else lock, job)
        assert seen_with_sacct.run_state is shown and seen_without.run_state is shown
        if lock != "mine":
            assert training.status() is seen_with_sacct.run_state  # the same files: the same state
    finally:
        if lock in ("live", "mine"):
            held.release()


def test_a_killed_run_is_stopped_in_plan_and_status_alike(tmp_path):
    """The issue's case: a local run killed at its last iteration was "stopped" in --status, "todo" in --plan."""
    rd = RunDir(tmp_path / config_hash(CFG))
    rd.claim(CFG)
    rd.append_log(StepRecord(10, {"total": 1.0}, step_s=0.1))
    write_status(rd.path, "running", executor="local", pid=DEAD_PID)
    training = Training(CFG, rd.path, [CFG.eval])
    (line,) = collect([Target(rd.path, "t", 10, frozenset({eval_key(CFG.eval)}))], query=lambda ids: {})
    assert training.status() is RunState.STOPPED and line.run_state is RunState.STOPPED and line.state == "stopped"
    assert training.status().to_run  # reproduce.py submits it again

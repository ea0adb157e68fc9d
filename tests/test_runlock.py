"""One trainer per run directory (issue 12, section 4): the NFS-safe lock itself, `ifbf train` refusing a
run another process trains, a SIGKILLed trainer's stale lock broken on resume, and two reproduce.py
processes started together training each run exactly once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, TINY_TRAIN
from ifbf.commands.cli import main as ifbf_main
from ifbf.config import BASE_CONFIG, load_config
from ifbf.experiments import load_preset, load_table
from ifbf.orchestrate.plan import build_plan
from ifbf.orchestrate.jobs import Busy, TrainJob
from ifbf.store.rundir import RunDir, read_status
from ifbf.store.runlock import LockHeld, RunLock

DEAD_PID = 2**22 + 12345  # above the default pid_max: no such process


def _fake_owner(path: Path, age_s: float, host: str, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "token": "theirs", "purpose": "training"}))
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_second_owner_is_refused_until_the_first_releases(tmp_path):
    first = RunLock(tmp_path / "train.lock", "training").acquire()
    with pytest.raises(LockHeld, match=f"held by pid {os.getpid()} on {socket.gethostname()}"):
        RunLock(tmp_path / "train.lock", "training").acquire()
    first.release()
    assert not (tmp_path / "train.lock").exists()
    with RunLock(tmp_path / "train.lock", "training") as second:
        assert json.loads((tmp_path / "train.lock").read_text())["token"] == second.token


def test_only_one_of_many_racing_takers_wins(tmp_path):
    winners, start = [], threading.Barrier(16)

    def take() -> None:
        lock = RunLock(tmp_path / "x.lock", "race", heartbeat=False)
        start.wait()
        try:
            winners.append(lock.acquire())
        except LockHeld:
            pass

    threads = [threading.Thread(target=take) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_dead_pid_on_this_host_is_broken_with_a_warning(tmp_path, capsys):
    _fake_owner(tmp_path / "train.lock", age_s=0, host=socket.gethostname(), pid=DEAD_PID)
    with RunLock(tmp_path / "train.lock", "training"):
        pass
    err = capsys.readouterr().err
    assert "breaking the stale lock" in err and f"its pid {DEAD_PID} is gone" in err


def test_other_host_counts_as_alive_until_its_heartbeat_is_older_than_the_limit(tmp_path, capsys):
    path = tmp_path / "train.lock"
    _fake_owner(path, age_s=50, host="node-elsewhere", pid=1)
    with pytest.raises(LockHeld, match="node-elsewhere"):
        RunLock(path, "training", stale_s=60).acquire()
    _fake_owner(path, age_s=70, host="node-elsewhere", pid=1)
    RunLock(path, "training", stale_s=60).acquire().release()
    assert "heartbeat is 70 s old (limit runtime.lock_stale_s=60)" in capsys.readouterr().err


def test_heartbeat_keeps_the_lock_fresh(tmp_path):
    lock = RunLock(tmp_path / "train.lock", "training", stale_s=1.0).acquire()  # beats every 0.2 s
    try:
        old = time.time() - 100
        os.utime(tmp_path / "train.lock", (old, old))
        time.sleep(0.8)
        assert time.time() - (tmp_path / "train.lock").stat().st_mtime < 1.0
        assert RunLock(tmp_path / "train.lock", "training", stale_s=1.0).held_by_other() is not None
    finally:
        lock.release()


def test_a_requeued_job_takes_over_its_own_lock(tmp_path):
    """The job id is the caller's (its executor reads it from the environment: tests/test_executors.py)."""
    path = tmp_path / "train.lock"
    path.write_text(json.dumps({"host": "node-before-requeue", "pid": 1, "job_id": "77_3", "token": "t"}))
    RunLock(path, "training", job_id="77_3").acquire().release()
    _fake_owner(path, age_s=0, host="node-before-requeue", pid=1)  # another task of the array: not ours
    with pytest.raises(LockHeld):
        RunLock(path, "training", job_id="77_4").acquire()
    with pytest.raises(LockHeld):  # a process outside any job
        RunLock(path, "training").acquire()
    # the same job, a live process on this host: e.g. two local jobs inside one allocation; only a pid check
    # may free it
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "job_id": "77_3", "token": "t"}))
    with pytest.raises(LockHeld):
        RunLock(path, "training", job_id="77_3").acquire()


def test_second_ifbf_train_exits_and_leaves_the_run_alone(tmp_path, capsys):
    out = tmp_path / "run"
    with RunDir(out).train_lock():
        code = ifbf_main(["train", "--out", str(out), "--no-progress", *TINY_TRAIN])
    err = capsys.readouterr().err
    assert code == 2 and "is held by pid" in err and "wait for it" in err
    assert sorted(p.name for p in out.iterdir()) == []  # no config.yaml, status or log written


def test_train_job_finding_its_run_busy_reports_it_and_writes_nothing(tmp_path):
    cfg = load_config(BASE_CONFIG, TINY_TRAIN)
    run_dir = tmp_path / "run"
    with RunDir(run_dir).train_lock():
        result = TrainJob.of(cfg, run_dir, [])()
    assert isinstance(result, Busy) and "held by" in result.reason
    assert read_status(run_dir) is None and not (run_dir / "config.yaml").exists()


def _iterations(run_dir: Path) -> list[int]:
    return [r.iter for r in RunDir(run_dir).read_log()]


@pytest.mark.slow
def test_sigkilled_trainer_leaves_a_stale_lock_that_the_next_run_breaks_and_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ifbf", "train", "--out", str(out), "--no-progress", *TINY_TRAIN,
           "train.iters=16", "runtime.ckpt_every=2", "runtime.log_every=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "log.jsonl").is_file() and len(_iterations(out)) >= 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(_iterations(out))
    assert 4 <= killed_at < 16, "the trainer should die mid-run"
    assert json.loads((out / "train.lock").read_text())["pid"] == proc.pid  # its lock outlives it

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "breaking the stale lock" in resumed.stderr and f"pid {proc.pid} is gone" in resumed.stderr
    assert "resuming" in resumed.stdout + resumed.stderr
    assert _iterations(out) == list(range(1, 17))  # every iteration logged once: nothing trained twice
    assert not (out / "train.lock").exists()  # released at the end


@pytest.mark.slow
def test_two_reproduce_processes_started_together_train_each_run_once(tmp_path):
    tiny = [*(o for o in TINY_TRAIN if not o.startswith("eval.")), "train.iters=6", "runtime.ckpt_every=3",
            "runtime.log_every=1"]
    cmd = [sys.executable, str(REPO / "reproduce.py"), "--table", "4", "--preset", "smoke", "--executor", "local",
           "--results", str(tmp_path), "--set", *tiny]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    runs = sorted((tmp_path / "smoke" / "runs").iterdir())
    trainings = len(build_plan([load_table(4)], load_preset("smoke"), 1, tmp_path).trainings)
    assert len(runs) == trainings
    for run in runs:
        assert _iterations(run) == [1, 2, 3, 4, 5, 6], run  # trained once: no iteration logged twice
        assert read_status(run).state == "done" and not (run / "train.lock").exists()
    jobs = [d for d in (tmp_path / "smoke" / ".submitit").iterdir() if d.name.isdigit()]  # one folder per job pid
    assert len(jobs) == trainings  # a job per training over both processes
    for out in outputs:  # both end with the whole table
        assert f"wrote {tmp_path / 'smoke' / 'table4.md'}" in out
    df = pd.read_csv(tmp_path / "smoke" / "table4.csv", index_col=0)
    assert df["ours"].notna().all()

"""Stopping reproduce.py with local jobs (docs/cluster.md, "Stopping reproduce.py"): Ctrl-C stops it and its
jobs with one line on the terminal. SIGTERM and SIGHUP do the same (tests/test_faults_training.py, which
imports the helpers below)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, TINY_TRAIN
from ifbf.store.rundir import RunDir

ITERS = 20
TINY = [*(o for o in TINY_TRAIN if not o.startswith("eval.")), f"train.iters={ITERS}", "runtime.ckpt_every=5",
        "runtime.log_every=1"]


def _start(results: Path) -> subprocess.Popen:
    """reproduce.py in a session of its own, as a terminal runs it: Ctrl-C reaches its whole process group."""
    cmd = [sys.executable, str(REPO / "reproduce.py"), "--table", "4", "--preset", "smoke", "--executor", "local",
           "--results", str(results), "--set", *TINY]
    return subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _training(proc: subprocess.Popen, results: Path, timeout_s: float = 300) -> Path:
    """The run directory of the first training, once it has logged an iteration."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        for run in (results / "smoke" / "runs").glob("*"):
            if RunDir(run).read_log():
                return run
        time.sleep(0.2)
    raise AssertionError("no training started")


def _gone(pgid: int, timeout_s: float = 60) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_ctrl_c_stops_the_local_jobs_with_one_line(tmp_path):
    proc = _start(tmp_path)
    run = _training(proc, tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    try:  # reproduce.py itself must exit; its output pipes are read only then (a job that outlived it would
        proc.wait(timeout=180)  # hold them open: that is what _gone below reports)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"reproduce.py did not exit after Ctrl-C: {proc.communicate(timeout=30)[1][-3000:]}")
    assert _gone(proc.pid), "a local job outlived Ctrl-C"
    err = proc.stderr.read()
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["reproduce.py: interrupted"], err[-3000:]
    assert "KeyboardInterrupt" in (tmp_path / "smoke" / ".submitit" / "controller.err").read_text()
    assert len(RunDir(run).read_log()) < ITERS  # stopped mid-training

"""--status / ifbf status (issue 12, section 3): states, progress, ETA and hours from constructed run
directories (no scheduler), and against the local SLURM cluster with a running, a finished and a failed job."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TINY_TRAIN
from fakeruns import finish_smoke_table
from ifbf.commands.cli import main as ifbf_main
from ifbf.commands.reproduce import cli
from ifbf.config import BASE_CONFIG, load_config
from ifbf.orchestrate.cluster import load_profile
from ifbf.orchestrate.executors import make_executor
from ifbf.orchestrate.jobs import TrainJob
from ifbf.orchestrate.slurm import sacct, slurm_available
from ifbf.orchestrate.status import Target, collect, progress_log, render
from ifbf.store.rundir import EvalResult, RunDir, StepRecord, runs_root, write_status

TOTAL = 100


def _run(root: Path, name: str, iters_logged: list[int], imgs_per_s: float = 4.0) -> Path:
    rd = RunDir(root / name)
    rd.claim(load_config(BASE_CONFIG, [*TINY_TRAIN, f"train.iters={TOTAL}"]))  # batch 2
    for it in iters_logged:
        rd.append_log(StepRecord(it, {"total": 1.0 / it}, lr=0.01, imgs_per_s=imgs_per_s))
    (rd.path / "env.json").write_text(json.dumps({"device": "cpu", "world_size": 1}))
    return rd.path


def test_states_progress_eta_and_hours_from_the_run_files(tmp_path):
    root = runs_root("smoke", tmp_path)
    done = _run(root, "done00000000", [50, 100])
    RunDir(done).record_evaluation(RunDir(done).config(), RunDir(done).config().eval, EvalResult(0.5, {}), main=True)
    running = _run(root, "running00000", [10, 20])
    write_status(running, "running", executor="local", pid=os.getpid(), cpus=2, log="/logs/running.err")
    failed = _run(root, "failed000000", [10])
    write_status(failed, "failed", executor="local", error="boom", log="/logs/failed.err")
    stopped = _run(root, "stopped00000", [10])
    write_status(stopped, "running", executor="local", pid=2**22 + 12345)  # no such process: it died
    oom = _run(root, "slurmoom0000", [30])
    write_status(oom, "running", executor="slurm", job_id="41_0")
    requeued = _run(root, "slurmrequeue", [40])
    write_status(requeued, "requeued", executor="slurm", job_id="42")
    lagging = _run(root, "slurmlagging", [5])  # sacct says pending, but the job already trains (holds the lock)
    write_status(lagging, "running", executor="slurm", job_id="43")
    queued = _run(root, "slurmpending", [])  # pending, the lock not its job's: it waits in the queue
    write_status(queued, "submitted", executor="slurm", job_id="44")
    fresh = root / "notsubmitted"
    RunDir(fresh).claim(load_config(BASE_CONFIG, [*TINY_TRAIN, f"train.iters={TOTAL}"]))

    asked = []

    def fake_sacct(ids: list[str]) -> dict:
        asked.append(ids)
        return {"41_0": [{"state": "OOM", "elapsed_s": 3600, "gpus": 2, "cpus": 8}],
                "42": [{"state": "requeued", "elapsed_s": 1800, "gpus": 0, "cpus": 4},
                       {"state": "timeout", "elapsed_s": 1800, "gpus": 0, "cpus": 4},
                       {"state": "running", "elapsed_s": 600, "gpus": 0, "cpus": 4}],
                "43": [{"state": "pending", "elapsed_s": 0, "gpus": 0, "cpus": 4}],
                "44": [{"state": "pending", "elapsed_s": 0, "gpus": 0, "cpus": 4}]}

    targets = [Target(p, p.name, TOTAL) for p in (done, running, failed, stopped, oom, requeued, lagging, queued,
                                                  fresh)]
    lagging_lock = RunDir(lagging).train_lock(job_id="43").acquire()  # the lock of job 43, which status.json records
    other_lock = RunDir(queued).train_lock(job_id="99").acquire()  # another job trains the queued run: not job 44
    try:
        lines = {ln.run_hash: ln for ln in collect(targets, query=fake_sacct)}
    finally:
        lagging_lock.release()
        other_lock.release()
    assert asked == [["41_0", "42", "43", "44"]]  # one scheduler query for every SLURM job
    states = {h: ln.state for h, ln in lines.items()}
    assert states == {"done00000000": "done", "running00000": "running", "failed000000": "failed",
                      "stopped00000": "stopped", "slurmoom0000": "OOM", "slurmrequeue": "running (requeued ×2)",
                      "slurmlagging": "running", "slurmpending": "pending", "notsubmitted": "not submitted"}
    r = lines["running00000"]
    assert (r.iteration, r.total, r.loss, r.log) == (20, TOTAL, 1 / 20, "/logs/running.err")
    assert r.eta_s == pytest.approx(80 * 2 / 4.0)  # 80 iterations left, batch 2, 4 images/s
    assert r.spent_h == pytest.approx(20 * 2 / 4.0 * 2 / 3600)  # 10 s of training on 2 CPUs
    assert lines["failed000000"].eta_s is None
    assert lines["slurmrequeue"].spent_h == pytest.approx(4200 * 4 / 3600)  # sacct's elapsed x CPUs
    assert lines["slurmoom0000"].spent_h == pytest.approx(2.0) and lines["slurmoom0000"].unit == "CPU"
    text = render(list(lines.values()))
    assert "9 training(s): 1 OOM, 1 done, 1 failed, 1 not submitted, 1 pending, 3 running, 1 stopped;" in text
    assert "2 without a measured speed (see --plan)" in text  # the queued one and the one never submitted
    assert "running00000  running" in text and "20/100" in text and "log: /logs/running.err" in text


def test_ifbf_status_reads_a_results_folder(tmp_path, capsys):
    running = _run(runs_root("smoke", tmp_path), "abc123abc123", [6])
    write_status(running, "running", executor="local", pid=os.getpid())
    before = sorted((p.name, p.stat().st_mtime) for p in running.iterdir())
    assert ifbf_main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "abc123abc123  running" in out and "6/100" in out and "1 training(s): 1 running" in out
    assert sorted((p.name, p.stat().st_mtime) for p in running.iterdir()) == before  # reads, never writes
    assert ifbf_main(["status", str(tmp_path / "nothing")]) == 2


def _groups(out: str) -> dict[str, int]:
    """Label -> how many lines ``ifbf status`` printed with it."""
    labels = [line.split("  log: ")[0].rsplit("  ", 1)[1] for line in out.splitlines() if "  log: " in line]
    return {label: labels.count(label) for label in labels}


def test_ifbf_status_finds_every_papers_runs_and_names_the_paper(tmp_path, capsys):
    """RESULTS/<preset>/runs and RESULTS/<paper>/<preset>/runs alike, another paper's labelled <paper>/<preset>,
    also when RESULTS is that paper's own folder; --preset keeps that preset of every paper."""
    danet, ours = finish_smoke_table(tmp_path, 1, "danet"), finish_smoke_table(tmp_path, 3)
    assert ifbf_main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert _groups(out) == {"smoke": ours, "danet/smoke": danet}
    assert out.splitlines()[-1].startswith(f"{danet + ours} training(s): {danet + ours} done;")
    assert ifbf_main(["status", str(tmp_path / "danet")]) == 0
    assert _groups(capsys.readouterr().out) == {"danet/smoke": danet}
    assert ifbf_main(["status", str(tmp_path), "--preset", "smoke"]) == 0
    assert _groups(capsys.readouterr().out) == {"smoke": ours, "danet/smoke": danet}
    assert ifbf_main(["status", str(tmp_path), "--preset", "paper"]) == 2
    assert f"no run directories under {tmp_path}/paper/runs nor {tmp_path}/<paper>/paper/runs" in \
        capsys.readouterr().err


@pytest.mark.slurm
@pytest.mark.skipif(not slurm_available(), reason="no local SLURM (slurm/local-up.sh)")
def test_status_of_a_running_a_finished_and_a_failed_slurm_job(tmp_path):
    profile = load_profile("local-ci")
    ex = make_executor("slurm", profile)
    tiny = [*(o for o in TINY_TRAIN if not o.startswith("eval.")), "runtime.log_every=1"]
    configs = {"finished": load_config(BASE_CONFIG, [*tiny, "train.iters=4"]),
               "failed": load_config(BASE_CONFIG, [*tiny, "train.iters=4", "data.dataset=cityscapes",
                                                   "data.root=/no/such/dir"]),  # fails inside the job
               "running": load_config(BASE_CONFIG, [*tiny, "train.iters=5000", "runtime.ckpt_every=5000"])}
    jobs = {}
    for name in ("finished", "failed", "running"):  # the 2-CPU node runs two 1-CPU jobs at once
        run_dir = tmp_path / name
        [job] = ex.submit(tmp_path / "jobs", [TrainJob.of(configs[name], run_dir, [])])
        jobs[name] = job
        write_status(run_dir, "submitted", ex.record(job))
        if name != "running":
            job.exception()  # wait for it to end
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(RunDir(tmp_path / "running").read_log()) < 2:
            time.sleep(0.5)
        targets = [Target(tmp_path / n, n, configs[n].train.iters) for n in ("finished", "failed", "running")]
        lines = {ln.label: ln for ln in collect(targets)}
        assert lines["finished"].state == "done" and lines["finished"].iteration == 4
        assert lines["failed"].state == "failed" and lines["failed"].log == str(jobs["failed"].paths.stderr)
        assert "/no/such/dir" in Path(lines["failed"].log).read_text()
        running = lines["running"]
        assert running.state == "running" and 2 <= running.iteration < 5000 and running.eta_s > 0
        assert running.spent_h > 0 and running.left_h > 0
        assert sacct([str(jobs["failed"].job_id)])[str(jobs["failed"].job_id)][-1]["state"] == "failed"
    finally:
        jobs["running"].cancel(check=False)


def test_reproduce_status_lists_every_training_of_the_table_and_writes_nothing(tmp_path, capsys):
    assert cli(["--table", "4", "--preset", "smoke", "--results", str(tmp_path), "--status"]) == 0
    out = capsys.readouterr().out
    assert out.count("  not submitted ") == 3 and "T4 OHEM + DA; T4 OHEM + DA + MS" in out
    assert out.splitlines()[-1].startswith("3 training(s): 3 not submitted; 0.00 CPU-hours spent")
    assert list(tmp_path.iterdir()) == []


def test_sacct_output_is_parsed_pending_array_tasks_included(monkeypatch):
    # what sacct printed on the local cluster for a 3-task array (2 running, 1 throttled) and a failed job
    printed = ("12_0|RUNNING|0:0|51|billing=1,cpu=1,mem=4G,node=1\n12_1|RUNNING|0:0|51|billing=1,cpu=1,mem=4G,node=1\n"
               "12_[2%2]|PENDING|0:0|0|\n5|FAILED|3:0|1|billing=1,cpu=1,gres/gpu=2,mem=512M,node=1\n")
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, printed, "")

    monkeypatch.setattr("ifbf.orchestrate.slurm.shutil.which", lambda name: "/usr/bin/sacct")
    monkeypatch.setattr("ifbf.orchestrate.slurm.subprocess.run", fake_run)
    found = sacct(["12_0", "12_2", "5"])
    assert len(calls) == 1 and calls[0][calls[0].index("-j") + 1] == "12,5"
    assert found["12_0"][0]["state"] == "running" and found["12_0"][0]["cpus"] == 1
    assert found["12_2"][0]["state"] == "pending"
    assert found["5"][0]["state"] == "failed" and found["5"][0]["gpus"] == 2
    assert set(found) == {"12_0", "12_2", "5"}


def test_the_log_named_is_the_one_that_says_what_the_job_does():
    """submitit prints a job's progress into *_log.out and its traceback into *_log.err (recorded at submission)."""
    err = "/r/smoke/.submitit/4242/4242_0_log.err"
    out = "/r/smoke/.submitit/4242/4242_0_log.out"
    for state in ("running", "pending", "done", "requeued (requeued ×1)"):
        assert progress_log(err, state) == out
    for state in ("failed", "timeout", "OOM", "cancelled"):
        assert progress_log(err, state) == err
    assert progress_log("/logs/custom.log", "running") == "/logs/custom.log" and progress_log(None, "running") is None

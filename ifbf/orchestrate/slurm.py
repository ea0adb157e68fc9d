"""What ifbf asks SLURM (its commands; the SLURM executor itself: ``orchestrate.executors``): whether a
controller answers, whether a job is still queued, and what its accounting (``sacct``) knows of jobs, which
``--status`` shows (sacct still knows jobs that squeue has forgotten: finished, failed, timed out, out of
memory, requeued).
"""

from __future__ import annotations

import shutil
import subprocess

# sacct's State (first word: "CANCELLED by 0") -> ours (orchestrate.status's words)
SLURM_STATES = {
    "PENDING": "pending", "RUNNING": "running", "REQUEUED": "requeued", "PREEMPTED": "requeued",
    "SUSPENDED": "suspended", "COMPLETING": "running", "COMPLETED": "done", "TIMEOUT": "timeout",
    "OUT_OF_MEMORY": "OOM", "FAILED": "failed", "NODE_FAIL": "failed", "BOOT_FAIL": "failed",
    "DEADLINE": "timeout", "CANCELLED": "cancelled",
}


def slurm_available() -> bool:
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    return subprocess.run(["scontrol", "ping"], capture_output=True).returncode == 0


def slurm_job_active(job_id: str) -> bool:
    """Whether the scheduler still lists the job as pending, running, or being requeued."""
    if shutil.which("squeue") is None:
        return False
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return out.returncode == 0 and bool(out.stdout.strip())


def sacct(job_ids: list[str]) -> dict[str, list[dict]]:
    """One ``sacct`` call for all jobs: job id -> its records, oldest first (a requeued job has one per start).
    Array tasks are asked for by their array (sacct lists a pending task only inside ``<id>_[2-5%2]``)."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    out = subprocess.run(["sacct", "-X", "-D", "-n", "-P", "-j", ",".join(arrays),
                          "-o", "JobID,State,ExitCode,ElapsedRaw,AllocTRES"], capture_output=True, text=True)
    records: dict[str, list[dict]] = {}
    pending: dict[str, dict] = {}
    for line in out.stdout.splitlines():
        fields = line.split("|")
        if len(fields) != 5:
            continue
        job, state, code, elapsed, tres = fields
        record = {"state": SLURM_STATES.get(state.split()[0], state.lower()) if state else "unknown", "exit": code,
                  "elapsed_s": int(elapsed or 0), "gpus": _tres_count(tres, "gres/gpu"),
                  "cpus": _tres_count(tres, "cpu")}
        if "[" in job:  # array tasks not started yet
            pending.update({task: record for task in _array_tasks(job)})
        else:
            records.setdefault(job, []).append(record)
    for task, record in pending.items():
        records.setdefault(task, [record])
    return {j: records[j] for j in job_ids if j in records}


def _array_tasks(job: str) -> list[str]:
    """``"12_[0-2,5%2]"`` -> ``["12_0", "12_1", "12_2", "12_5"]``."""
    base, _, spec = job.partition("_[")
    tasks = []
    for part in spec.rstrip("]").split("%")[0].split(","):
        first, _, last = part.partition("-")
        if first.isdigit():
            tasks += [f"{base}_{i}" for i in range(int(first), int(last or first) + 1)]
    return tasks


def _tres_count(tres: str, name: str) -> int:
    for item in tres.split(","):
        key, _, value = item.partition("=")
        if key == name and value.isdigit():
            return int(value)
    return 0

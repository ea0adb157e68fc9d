"""Where jobs run: one class per executor (local, debug, slurm), built by ``make_executor``, the only module
that tells executors apart. An executor knows the CPUs each job gets, how it submits a round of jobs (SLURM:
one array), what a run's status records of a job (job id, log, pid), whether a recorded job still lives, how
long a list of trainings takes on it, and what must hold before it is used. Adding a scheduler is one class
here plus a profile (docs/architecture.md).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import submitit

from ifbf.errors import IfbfError
from ifbf.orchestrate.cluster import SlurmProfile, slurm_available, slurm_job_active
from ifbf.orchestrate.resources import share_per_job
from ifbf.store.rundir import Status, Submission, process_alive


class Executor:
    """Runs picklable job callables through submitit (``cluster`` names submitit's plugin)."""

    name: ClassVar[str]
    cluster: ClassVar[str]
    default_profile: ClassVar[str] = "local"
    detached: ClassVar[bool] = False  # jobs outlive this process: --no-wait may return after submitting
    requeues: ClassVar[bool] = True  # submitit resubmits a preempted / timed-out job (max_num_timeout)

    def __init__(self, profile: SlurmProfile, parallel: int = 1) -> None:
        self.profile, self.parallel = profile, max(1, parallel)

    def threads_per_job(self) -> int | None:
        """CPUs each job may use: a share of this process's (local jobs); None: what the scheduler gives it."""
        return share_per_job(self.parallel)

    def cpus_per_job(self) -> int:
        """The CPUs one job holds, as device-hours of a CPU run count them."""
        return self.threads_per_job() or 1

    def round_size(self, jobs: int) -> int:
        """How many of ``jobs`` trainings are submitted (and waited for) together."""
        return self.parallel

    def params(self) -> dict[str, Any]:
        """submitit parameters of one job of the profile."""
        return self.profile.submitit_params()

    def submit(self, folder: Path, jobs: Sequence[Any], max_requeues: int | None = None) -> list[submitit.Job]:
        """Submit ``jobs`` (``max_requeues``: preemptions/timeouts each may survive; default the profile's);
        their logs go under ``folder/<job id>``."""
        ex = self._submitit(folder, max_requeues)
        return [ex.submit(job) for job in jobs]

    def _submitit(self, folder: Path, max_requeues: int | None) -> submitit.AutoExecutor:
        folder.mkdir(parents=True, exist_ok=True)
        requeues = self.profile.max_requeues if max_requeues is None else max_requeues
        extra = {f"{self.cluster}_max_num_timeout": requeues} if self.requeues else {}
        ex = submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster, **extra)
        ex.update_parameters(**self.params())
        return ex

    def record(self, job: submitit.Job) -> Submission:
        """What the run's status record keeps of a submitted job: enough to find its log and ask whether it lives."""
        return Submission(self.name, str(job.job_id), str(job.paths.stderr), int(job.job_id))

    @staticmethod
    def alive(status: Status) -> bool:
        """Whether the job ``status`` records can still be working."""
        return process_alive(status)

    def wall_clock(self, seconds: list[float]) -> tuple[float, str]:
        """Wall-clock of trainings of ``seconds`` each: in rounds of ``round_size``, each waiting for its slowest."""
        step = self.round_size(len(seconds))
        batches = [seconds[i : i + step] for i in range(0, len(seconds), step)]
        return sum(max(b) for b in batches), f"{step} at a time ({self.name} --parallel {step})"

    def problems(self) -> list[str]:
        """What must hold on this machine before a job is submitted (one line per problem, naming the fix)."""
        if not self.profile.gpus_per_node:
            return []
        import torch  # only here: planning and reporting must not pay for importing torch

        have = torch.cuda.device_count()
        if have < self.profile.gpus_per_node:
            return [f"the profile asks for {self.profile.gpus_per_node} GPU(s) per run but this machine has {have}; "
                    "use a profile with gpus_per_node: 0 (e.g. --profile local) or --executor slurm"]
        return []


class LocalExecutor(Executor):
    """Subprocesses of this process, ``--parallel`` at a time, splitting its CPUs."""

    name, cluster = "local", "local"

    def _submitit(self, folder: Path, max_requeues: int | None) -> submitit.AutoExecutor:
        ex = super()._submitit(folder, max_requeues)
        # Ctrl-C reaches the job controller too: its traceback goes to a file, not the terminal
        ex.update_parameters(local_setup=[f"exec 2>>{shlex.quote(str(folder / 'controller.err'))}"])
        return ex


class DebugExecutor(Executor):
    """In this process, one at a time (a debugger reaches the job); the job's output is this process's."""

    name, cluster = "debug", "debug"
    requeues = False

    def round_size(self, jobs: int) -> int:
        return 1

    def record(self, job: submitit.Job) -> Submission:
        return Submission(self.name, str(job.job_id), None, os.getpid())


class SlurmExecutor(Executor):
    """SLURM through submitit: every round one job array, each job sized by its allocation."""

    name, cluster = "slurm", "slurm"
    default_profile = "example"
    detached = True

    def threads_per_job(self) -> int | None:
        return None

    def cpus_per_job(self) -> int:
        return self.profile.cpus_per_task

    def round_size(self, jobs: int) -> int:
        return max(1, jobs)

    def params(self) -> dict[str, Any]:
        return {**self.profile.submitit_params(), **self.profile.slurm_params()}

    def submit(self, folder: Path, jobs: Sequence[Any], max_requeues: int | None = None) -> list[submitit.Job]:
        ex = self._submitit(folder, max_requeues)
        if len(jobs) < 2:
            return [ex.submit(job) for job in jobs]
        with ex.batch():  # one job array: one sbatch for the whole round
            submitted = [ex.submit(job) for job in jobs]
        return submitted

    def record(self, job: submitit.Job) -> Submission:
        return Submission(self.name, str(job.job_id), str(job.paths.stderr), None)

    @staticmethod
    def alive(status: Status) -> bool:
        return bool(status.job_id) and slurm_job_active(str(status.job_id))

    def wall_clock(self, seconds: list[float]) -> tuple[float, str]:
        slots = [0.0] * max(1, self.profile.array_parallelism)
        for s in seconds:
            slots[slots.index(min(slots))] += s
        return max(slots, default=0.0), (f"{self.profile.array_parallelism} at once (profile array_parallelism; "
                                         "queue waits not included)")

    def problems(self) -> list[str]:
        if slurm_available():
            return []
        return ["--executor slurm: no SLURM controller answers here (sbatch/scontrol ping); "
                "use --executor local, or run from a cluster login node"]


def rejected(err: Exception) -> IfbfError:
    """sbatch refused a submission (training or preflight): one line naming the profile keys to check."""
    reason = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
    return IfbfError(f"SLURM rejected the job: {reason}. Check the profile's partition, gpus_per_node (GPUs must "
                     "exist on that partition), cpus_per_task and mem_gb against `sinfo -o '%P %G %c %m'`")


EXECUTORS: dict[str, type[Executor]] = {e.name: e for e in (SlurmExecutor, LocalExecutor, DebugExecutor)}


def executor_class(name: str) -> type[Executor]:
    if name not in EXECUTORS:
        raise IfbfError(f"unknown executor {name!r} (choose from {', '.join(EXECUTORS)})")
    return EXECUTORS[name]


def make_executor(name: str, profile: SlurmProfile, parallel: int = 1) -> Executor:
    """The executor ``--executor name`` means, for jobs of ``profile`` (``parallel``: local jobs at once)."""
    return executor_class(name)(profile, parallel)


def uses_scheduler(status: Status) -> bool:
    """Whether the job a run's status names belongs to a scheduler (its accounting knows it: sacct)."""
    return EXECUTORS.get(status.executor or "", LocalExecutor).detached


def job_alive(status: Status) -> bool:
    """Liveness of the job a run's status names, asked of the executor that submitted it."""
    return EXECUTORS.get(status.executor or "", LocalExecutor).alive(status)

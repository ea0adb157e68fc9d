"""Where jobs run: one class per executor (local, debug, slurm, pbs), built by ``make_executor``, the only module
that tells executors apart. An executor owns everything about its scheduler: the CPUs each job gets, how the
profile's resources reach a job (submitit's generic parameters plus the scheduler's own, from the profile keys
its ``Options`` declare), how it submits a round of jobs (SLURM: one array), its requeue options, what a run's
status records of a job and whether that job still lives, its accounting query for ``--status`` (SLURM: sacct;
none elsewhere), how long a list of trainings takes on it, what must hold before it is used, and what the
scheduler tells its jobs' processes through the environment (their job id, the same across requeues; their
CPUs; the ranks of tasks its own launcher started). The run store and the engine know no scheduler: the job and
the command line hand them what these say (``this_job``, ``granted_cpus``, ``export_launched_ranks``).
Adding a scheduler is one class here plus a profile (docs/architecture.md).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import submitit

from ifbf.errors import IfbfError
from ifbf.orchestrate.cluster import ClusterProfile, read_options
from ifbf.orchestrate.resources import share_per_job
from ifbf.orchestrate.slurm import sacct, slurm_available, slurm_job_active
from ifbf.store.rundir import Status, Submission, process_alive

# a scheduler's accounting: job ids -> each job's records, oldest first ({"state", "elapsed_s", "gpus", "cpus"})
Accounting = Callable[[list[str]], dict[str, list[dict]]]


@dataclass(frozen=True)
class NoOptions:
    """No profile keys of its own: the job runs on this machine (only the generic keys apply)."""


class Executor:
    """Runs picklable job callables through submitit (``cluster`` names submitit's plugin)."""

    name: ClassVar[str]
    cluster: ClassVar[str]
    default_profile: ClassVar[str] = "local"
    detached: ClassVar[bool] = False  # jobs outlive this process: --no-wait may return after submitting
    Options: ClassVar[type] = NoOptions  # the profile keys of this scheduler (a frozen dataclass)
    accounting: ClassVar[Accounting | None] = None  # one query for many jobs (--status); None: ask alive()
    cpus_variable: ClassVar[str | None] = None  # what the scheduler sets in a job: the CPUs it was given

    def __init__(self, profile: ClusterProfile, parallel: int = 1) -> None:
        self.profile, self.parallel = profile, max(1, parallel)
        schedulers = {e.name: e.Options for e in EXECUTORS.values()}
        self.options = read_options(profile, self.name, schedulers, strict=self.detached)

    @staticmethod
    def job_id(env: Mapping[str, str]) -> str | None:
        """The id of this scheduler's job that a process with environment ``env`` runs in, the same across
        requeues (run locks record it: a requeued job takes over its own); None: no job of this scheduler."""
        return None

    @staticmethod
    def launched_ranks(env: Mapping[str, str]) -> dict[str, str]:
        """torchrun's RANK, WORLD_SIZE and LOCAL_RANK of a process that the scheduler's own launcher started
        as one task of several (``engine.dist`` reads only those); empty when it did not."""
        return {}

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

    def requeue_options(self, max_requeues: int) -> dict[str, Any]:
        """submitit's options (of its executor's constructor) that resubmit a preempted or timed-out job up
        to ``max_requeues`` times; none: its jobs are not requeued."""
        return {}

    def submit(self, folder: Path, jobs: Sequence[Any], max_requeues: int | None = None) -> list[submitit.Job]:
        """Submit ``jobs`` (``max_requeues``: preemptions/timeouts each may survive; default the profile's);
        their logs go under ``folder/<job id>``."""
        ex = self._submitit(folder, max_requeues)
        return [ex.submit(job) for job in jobs]

    def _submitit(self, folder: Path, max_requeues: int | None) -> submitit.AutoExecutor:
        folder.mkdir(parents=True, exist_ok=True)
        requeues = self.profile.max_requeues if max_requeues is None else max_requeues
        ex = submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster, **self.requeue_options(requeues))
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

    def rejected(self, err: Exception) -> IfbfError:
        """The scheduler refused a submission (training or preflight): one line naming the profile keys to check."""
        return IfbfError(f"{self.name} rejected the job: {_last_line(err)}. Check the profile's gpus_per_node, "
                         "cpus_per_task and mem_gb")


def _last_line(err: Exception) -> str:
    return str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)


class LocalExecutor(Executor):
    """Subprocesses of this process, ``--parallel`` at a time, splitting its CPUs."""

    name, cluster = "local", "local"

    def requeue_options(self, max_requeues: int) -> dict[str, Any]:
        return {"local_max_num_timeout": max_requeues}

    def _submitit(self, folder: Path, max_requeues: int | None) -> submitit.AutoExecutor:
        ex = super()._submitit(folder, max_requeues)
        # Ctrl-C reaches the job controller too: its traceback goes to a file, not the terminal
        ex.update_parameters(local_setup=[f"exec 2>>{shlex.quote(str(folder / 'controller.err'))}"])
        return ex


class DebugExecutor(Executor):
    """In this process, one at a time (a debugger reaches the job); the job's output is this process's."""

    name, cluster = "debug", "debug"

    def round_size(self, jobs: int) -> int:
        return 1

    def record(self, job: submitit.Job) -> Submission:
        return Submission(self.name, str(job.job_id), None, os.getpid())


class ClusterExecutor(Executor):
    """A scheduler's executor: its jobs outlive this process, each sized by its allocation (the profile's CPUs
    and memory as submitit's generic parameters, plus ``scheduler_params``), all of a round submitted at once."""

    detached = True

    def threads_per_job(self) -> int | None:
        return None

    def cpus_per_job(self) -> int:
        return self.profile.cpus_per_task

    def round_size(self, jobs: int) -> int:
        return max(1, jobs)

    def params(self) -> dict[str, Any]:
        return {**self.profile.submitit_params(), **self.profile.allocation_params(), **self.scheduler_params()}

    def scheduler_params(self) -> dict[str, Any]:
        """The scheduler's own submitit parameters (``<cluster>_<name>``) from its profile keys (``self.options``)."""
        return {}

    def record(self, job: submitit.Job) -> Submission:
        return Submission(self.name, str(job.job_id), str(job.paths.stderr), None)

    def wall_clock(self, seconds: list[float]) -> tuple[float, str]:
        return max(seconds, default=0.0), "all at once (queue waits not included)"


# --- SLURM ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlurmOptions:
    """SLURM's profile keys."""

    partition: str | None = None  # sbatch --partition
    account: str | None = None  # sbatch --account
    constraint: str | None = None  # sbatch --constraint
    array_parallelism: int = 16  # array tasks running at once
    signal_delay_s: int = 120  # USR2 this long before the time limit: time to write checkpoint.pth


class SlurmExecutor(ClusterExecutor):
    """SLURM through submitit: every round one job array, each job sized by its allocation."""

    name, cluster = "slurm", "slurm"
    default_profile = "example"
    Options = SlurmOptions
    accounting = staticmethod(sacct)
    cpus_variable = "SLURM_CPUS_PER_TASK"

    @staticmethod
    def job_id(env: Mapping[str, str]) -> str | None:
        if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):  # as submitit names array tasks
            return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
        return env.get("SLURM_JOB_ID")

    @staticmethod
    def launched_ranks(env: Mapping[str, str]) -> dict[str, str]:
        if not (env.get("MASTER_ADDR") and env.get("SLURM_PROCID")):  # srun's tasks of slurm/train.sbatch
            return {}
        return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env.get("SLURM_NTASKS", "1"),
                "LOCAL_RANK": env.get("SLURM_LOCALID", "0")}

    def requeue_options(self, max_requeues: int) -> dict[str, Any]:
        return {"slurm_max_num_timeout": max_requeues}

    def scheduler_params(self) -> dict[str, Any]:
        o = self.options
        params = dict(slurm_partition=o.partition, slurm_array_parallelism=o.array_parallelism,
                      slurm_signal_delay_s=o.signal_delay_s, slurm_account=o.account, slurm_constraint=o.constraint)
        return {k: v for k, v in params.items() if v is not None}

    def submit(self, folder: Path, jobs: Sequence[Any], max_requeues: int | None = None) -> list[submitit.Job]:
        ex = self._submitit(folder, max_requeues)
        if len(jobs) < 2:
            return [ex.submit(job) for job in jobs]
        with ex.batch():  # one job array: one sbatch for the whole round
            submitted = [ex.submit(job) for job in jobs]
        return submitted

    @staticmethod
    def alive(status: Status) -> bool:
        return bool(status.job_id) and slurm_job_active(str(status.job_id))

    def wall_clock(self, seconds: list[float]) -> tuple[float, str]:
        slots = [0.0] * max(1, self.options.array_parallelism)
        for s in seconds:
            slots[slots.index(min(slots))] += s
        return max(slots, default=0.0), (f"{self.options.array_parallelism} at once (profile array_parallelism; "
                                         "queue waits not included)")

    def problems(self) -> list[str]:
        if slurm_available():
            return []
        return ["--executor slurm: no SLURM controller answers here (sbatch/scontrol ping); "
                "use --executor local, or run from a cluster login node"]

    def rejected(self, err: Exception) -> IfbfError:
        return IfbfError(f"SLURM rejected the job: {_last_line(err)}. Check the profile's partition, gpus_per_node "
                         "(GPUs must exist on that partition), cpus_per_task and mem_gb against "
                         "`sinfo -o '%P %G %c %m'`")


# --- PBS (PBS Pro, OpenPBS) ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PbsOptions:
    """PBS's profile keys."""

    queue: str | None = None  # qsub -q
    account: str | None = None  # qsub -A


class PbsExecutor(ClusterExecutor):
    """PBS through a submitit plugin registered as ``pbs`` (entry point group ``submitit``), which turns
    submitit's generic parameters into ``qsub -l select=1:ncpus=..:mem=..:ngpus=..,walltime=..`` and takes
    ``pbs_queue``, ``pbs_account`` and ``pbs_max_num_timeout``: one job per training (no arrays); no
    accounting query (``--status`` asks ``qstat`` whether each job still lives)."""

    name, cluster = "pbs", "pbs"
    default_profile = "pbs"
    Options = PbsOptions
    cpus_variable = "NCPUS"

    @staticmethod
    def job_id(env: Mapping[str, str]) -> str | None:
        return env.get("PBS_JOBID")  # "1234.server", "1234[5].server" for an array's subjob

    def requeue_options(self, max_requeues: int) -> dict[str, Any]:
        return {"pbs_max_num_timeout": max_requeues}

    def scheduler_params(self) -> dict[str, Any]:
        params = dict(pbs_queue=self.options.queue, pbs_account=self.options.account)
        return {k: v for k, v in params.items() if v is not None}

    @staticmethod
    def alive(status: Status) -> bool:
        """``qstat JOB`` answers for a queued, held or running job (a finished one needs ``-x``)."""
        if not status.job_id or shutil.which("qstat") is None:
            return False
        return subprocess.run(["qstat", str(status.job_id)], capture_output=True).returncode == 0

    def problems(self) -> list[str]:
        if self.cluster not in submitit.core.plugins.get_executors():
            return ["--executor pbs: submitit knows no 'pbs' executor here; install a submitit plugin for PBS "
                    "(an entry point 'executor' in the group 'submitit'), or use --executor local"]
        if shutil.which("qsub") is None:
            return ["--executor pbs: no qsub here; run from a PBS login node, or use --executor local"]
        return []

    def rejected(self, err: Exception) -> IfbfError:
        return IfbfError(f"PBS rejected the job: {_last_line(err)}. Check the profile's queue, gpus_per_node, "
                         "cpus_per_task and mem_gb against `qstat -Qf` and `pbsnodes -a`")


EXECUTORS: dict[str, type[Executor]] = {e.name: e for e in (SlurmExecutor, LocalExecutor, DebugExecutor, PbsExecutor)}


def executor_class(name: str) -> type[Executor]:
    if name not in EXECUTORS:
        raise IfbfError(f"unknown executor {name!r} (choose from {', '.join(EXECUTORS)})")
    return EXECUTORS[name]


def make_executor(name: str, profile: ClusterProfile, parallel: int = 1) -> Executor:
    """The executor ``--executor name`` means, for jobs of ``profile`` (``parallel``: local jobs at once)."""
    return executor_class(name)(profile, parallel)


def _kind(status: Status) -> type[Executor]:
    return EXECUTORS.get(status.executor or "", LocalExecutor)


def job_alive(status: Status) -> bool:
    """Liveness of the job a run's status names, asked of the executor that submitted it."""
    return _kind(status).alive(status)


def accounting(statuses: Iterable[Status], query: Accounting | None = None) -> dict[tuple[str, str], list[dict]]:
    """What the schedulers' accounting knows of the jobs ``statuses`` name, keyed by (executor, job id): one
    query per executor that keeps accounts (``query`` stands in for each of them: tests); none for the others."""
    asked: dict[type[Executor], set[str]] = {}
    for status in statuses:
        if status.job_id and _kind(status).accounting is not None:
            asked.setdefault(_kind(status), set()).add(str(status.job_id))
    return {(kind.name, job): records for kind, ids in asked.items()
            for job, records in (query or kind.accounting)(sorted(ids)).items()}


def this_job(env: Mapping[str, str] = os.environ) -> str | None:
    """The scheduler job this process runs in (None: none), for the run locks it takes."""
    return next((job for e in EXECUTORS.values() if (job := e.job_id(env))), None)


def granted_cpus(env: Mapping[str, str] = os.environ) -> tuple[str, str] | None:
    """(variable, value) of the CPUs a scheduler gave this job, e.g. ("SLURM_CPUS_PER_TASK", "8"); None: none."""
    return next(((e.cpus_variable, env[e.cpus_variable]) for e in EXECUTORS.values()
                 if e.cpus_variable and env.get(e.cpus_variable, "").isdigit()), None)


def export_launched_ranks(env: MutableMapping[str, str] = os.environ) -> None:
    """Export torchrun's rank variables for a process a scheduler's launcher (srun) started as one of several
    tasks (where torchrun's are set, they win)."""
    for e in EXECUTORS.values():
        for key, value in e.launched_ranks(env).items():
            env.setdefault(key, value)

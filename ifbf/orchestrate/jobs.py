"""The one job callable (train + evaluate one run) and what submitting it came to (the executors that
submit it: ``orchestrate.executors``).

``TrainJob`` is picklable (plain data only) and a submitit ``Checkpointable``: on preemption or timeout
submitit calls ``checkpoint()``, which resubmits the same job; the requeued job resumes from
``run_dir/checkpoint.pth``, the file the training loop writes, so resume and save paths are one path.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import submitit

from ifbf.config import Config, EvalConfig, from_dict, to_dict
from ifbf.orchestrate.executors import granted_cpus, this_job
from ifbf.orchestrate.resources import Allocation, size_to
from ifbf.store.rundir import RunDir, RunState, write_status
from ifbf.store.runlock import LockHeld


class Outcome(StrEnum):
    """What submitting a training came to, for the orchestrator."""

    DONE = "done"
    FAILED = "failed"
    SUBMITTED = "submitted"  # handed to a scheduler, not waited for (--no-wait)
    BUSY = "busy"  # another process has the run (its lock, or it is running elsewhere)


@dataclass(frozen=True)
class Busy:
    """The result of a job that found its run being trained by another process (it left the run alone)."""

    reason: str


class TrainJob(submitit.helpers.Checkpointable):
    """Train (or resume) one run, then add every extra inference setting it is needed for."""

    def __init__(self, config: dict, run_dir: str, evals: list[dict], threads: int | None = None) -> None:
        """``threads``: the CPUs this job may use when the submitter splits its own (local executor);
        None: what the scheduler gave the job (its executor's ``cpus_variable``, within the affinity mask)."""
        self.config, self.run_dir, self.evals, self.threads = config, run_dir, evals, threads

    @classmethod
    def of(cls, cfg: Config, run_dir: Path, evals: list[EvalConfig], threads: int | None = None) -> TrainJob:
        return cls(to_dict(cfg), str(run_dir), [to_dict(e) for e in evals], threads)

    def __call__(self) -> dict | Busy:
        # torch and the engine only inside the job: planning and submitting must not pay for importing them
        import torch

        from ifbf.engine.run import run
        from ifbf.engine.train import Interrupted

        rank = _setup_distributed()
        cfg = from_dict(self.config, f"job config of {self.run_dir}")
        allocation = size_to(cfg.runtime.workers, self.threads, granted_cpus())
        torch.set_num_threads(allocation.threads)
        cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, workers=allocation.workers))
        run_dir = Path(self.run_dir)
        # the lock records this job's id: requeued onto another node, the job takes over its own lock
        lock = RunDir(run_dir).train_lock(cfg.runtime.lock_stale_s, this_job()) if rank == 0 else nullcontext()
        try:
            with lock:
                print(f"{run_dir}: {allocation.describe()}", flush=True)
                return self._train(cfg, run_dir, rank, allocation, run, Interrupted)
        except LockHeld as held:  # another trainer has this run: leave its directory alone
            print(f"{run_dir}: not trained here: {held}", flush=True)
            return Busy(str(held))

    def _train(self, cfg: Config, run_dir: Path, rank: int, allocation: Allocation, run: Any,
               interrupted: type[Exception]) -> dict:
        if rank == 0:
            write_status(run_dir, RunState.RUNNING, threads=allocation.threads, workers=allocation.workers,
                         cpus=allocation.cpus)
        try:
            evals = [from_dict({**self.config, "eval": e}).eval for e in self.evals]
            metrics = run(cfg, run_dir, evals, progress=False, terminate_stops=False)
        except interrupted as stop:
            self._interrupted(stop, rank, run_dir)
            raise
        except Exception as err:
            if rank == 0:
                write_status(run_dir, RunState.FAILED, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
            raise
        if rank == 0:
            write_status(run_dir, RunState.DONE)
        return metrics

    def _interrupted(self, stop: Exception, rank: int, run_dir: Path) -> None:
        """The checkpoint is saved at an iteration boundary. Hand over to submitit's USR2 handler, which
        calls ``checkpoint()`` and requeues the job (or gives up after max_requeues); the other ranks wait
        to be stopped by the requeue. Outside submitit the exception just propagates."""
        if callable(stop.handler):
            if rank == 0:
                write_status(run_dir, RunState.REQUEUED, iteration=stop.iteration)
                stop.handler(stop.signum, None)  # requeues and exits
            else:
                time.sleep(300)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption/timeout: resubmit; the new job resumes from checkpoint.pth
        (the training loop has just written it, at the iteration the signal arrived)."""
        return submitit.helpers.DelayedSubmission(self)


def _setup_distributed() -> int:
    """Inside a multi-task submitit job: export RANK, WORLD_SIZE, MASTER_ADDR/PORT for env:// init
    (one task per GPU; each task picks its GPU by LOCAL_RANK). Returns this task's global rank."""
    try:
        env = submitit.JobEnvironment()
        tasks = env.num_tasks
    except Exception:  # noqa: BLE001 - not inside a cluster job (debug executor, tests)
        return 0
    if tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return env.global_rank

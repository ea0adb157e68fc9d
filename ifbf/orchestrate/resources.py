"""How many CPUs a job was given, and the torch threads and loader workers that follow from it.

Never the node's core count: a job that asked its scheduler for 1 CPU on a 64-core node that does not bind
CPUs still sees 64 cores in ``os.cpu_count()``, and 64 threads per job on a shared node is what made the local
cluster's smoke runs 5-15x slower than the same runs under the local executor (issue 12, section 6). What the
scheduler granted is handed in (``granted``: the variable its executor names, ``executors.granted_cpus``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Allocation:
    cpus: int  # CPUs this job may use
    source: str  # where that figure comes from, for the log
    threads: int  # torch intra-op threads
    workers: int  # data loader worker processes

    def describe(self) -> str:
        return (f"allocation: {self.cpus} CPU(s) ({self.source}) -> torch threads {self.threads}, "
                f"loader workers {self.workers}")


def affinity_cpus() -> int:
    """CPUs this process may run on (its affinity mask; cgroups/cpusets show here, ``os.cpu_count`` not)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS: no affinity masks
        return os.cpu_count() or 1


def allocated_cpus(share: int | None = None, granted: tuple[str, str] | None = None) -> tuple[int, str]:
    """CPUs given to this job: ``share`` when the caller split its own allocation (local executor), else
    ``granted`` (variable, value) when the scheduler set it, never more than the affinity mask allows."""
    mask = affinity_cpus()
    if share:
        return max(1, min(share, mask)), f"share of the submitting process's {mask} CPU(s)"
    if granted and granted[1].isdigit():
        variable, value = granted
        return max(1, min(int(value), mask)), f"{variable}={value}, affinity mask {mask}"
    return mask, f"affinity mask {mask}"


def size_to(requested_workers: int, share: int | None = None, granted: tuple[str, str] | None = None) -> Allocation:
    """Threads = the job's CPUs; loader workers = at most ``requested_workers``, and at most CPUs - 1 (the
    workers decode one image each on one thread while the main process runs the model)."""
    cpus, source = allocated_cpus(share, granted)
    return Allocation(cpus, source, cpus, min(requested_workers, max(0, cpus - 1)))


def share_per_job(parallel: int) -> int:
    """The CPUs each of ``parallel`` local jobs gets from this process's affinity mask."""
    return max(1, affinity_cpus() // max(1, parallel))

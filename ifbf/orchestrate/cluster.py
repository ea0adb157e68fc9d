"""Cluster profiles (slurm/profiles/<name>.yaml) and what ifbf asks the scheduler.

A profile holds the resources of one training job; ``submitit_params`` (+ ``slurm_params`` under SLURM)
turn it into the parameters of a submitit executor, with one task per GPU (``tasks_per_node = gpus_per_node``).
"""

from __future__ import annotations

import shutil
import subprocess
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ifbf.config import ConfigError, _coerce, parse_override, read_yaml

PROFILES = Path(__file__).resolve().parents[2] / "slurm" / "profiles"


@dataclass(frozen=True)
class SlurmProfile:
    partition: str | None = None
    gpus_per_node: int = 0
    tasks_per_node: int | None = None  # processes per run; default one per GPU (1 without GPUs)
    cpus_per_task: int = 4
    mem_gb: int = 16
    timeout_min: int = 60
    account: str | None = None
    constraint: str | None = None
    array_parallelism: int = 16
    signal_delay_s: int = 120  # USR2 this long before the time limit: time to write checkpoint.pth
    max_requeues: int = 3  # preemptions/timeouts a run may survive (submitit's max_num_timeout)

    def submitit_params(self) -> dict[str, Any]:
        """submitit parameters of one job, whatever runs it: time limit, one task per GPU, the GPUs."""
        tasks = self.tasks_per_node or max(1, self.gpus_per_node)
        params: dict[str, Any] = {"timeout_min": self.timeout_min, "tasks_per_node": tasks, "nodes": 1}
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        return params

    def slurm_params(self) -> dict[str, Any]:
        """The SLURM-only submitit parameters (partition, CPUs, memory, array size, signal, account)."""
        params = dict(slurm_partition=self.partition, cpus_per_task=self.cpus_per_task, mem_gb=self.mem_gb,
                      slurm_array_parallelism=self.array_parallelism, slurm_signal_delay_s=self.signal_delay_s,
                      slurm_account=self.account, slurm_constraint=self.constraint)
        return {k: v for k, v in params.items() if v is not None}


def profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.yaml"))


def load_profile(name_or_path: str, overrides: list[str] = ()) -> SlurmProfile:
    path = Path(name_or_path)
    if not path.is_file():
        path = PROFILES / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown cluster profile {name_or_path!r} (known: {', '.join(profiles())}, or a YAML path)")
    data = read_yaml(path)
    for text in overrides:
        keys, value = parse_override(text)
        data[".".join(keys)] = value
    known = {f.name: f for f in fields(SlurmProfile)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown profile key '{unknown[0]}' (known: {', '.join(known)})")
    hints = typing.get_type_hints(SlurmProfile)
    values = {k: _coerce(v, hints[k], f"{path}: {k}") for k, v in data.items()}
    return replace(SlurmProfile(), **values)


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

"""Cluster profiles (slurm/profiles/<name>.yaml): the resources of one training job, whatever runs it.

A profile holds generic keys (GPUs, processes, CPUs, memory, time limit, requeues), which each executor
hands to submitit as its generic parameters (``submitit_params``, ``allocation_params``), and the keys of one
scheduler (``extras``: e.g. a partition, a queue, an account), which only that scheduler's executor reads: it
declares them in its ``Options`` and types them with ``read_options`` (``orchestrate.executors``).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from ifbf.config import ConfigError, _coerce, parse_override, read_yaml

PROFILES = Path(__file__).resolve().parents[2] / "slurm" / "profiles"
Options = TypeVar("Options")


@dataclass(frozen=True)
class ClusterProfile:
    gpus_per_node: int = 0
    tasks_per_node: int | None = None  # processes per run; default one per GPU (1 without GPUs)
    cpus_per_task: int = 4
    mem_gb: int = 16
    timeout_min: int = 60
    max_requeues: int = 3  # preemptions/timeouts a run may survive (submitit's max_num_timeout)
    extras: Mapping[str, Any] = field(default_factory=dict)  # one scheduler's keys, as written (see read_options)
    source: str = "the profile"  # the file it was read from, for messages

    def submitit_params(self) -> dict[str, Any]:
        """submitit parameters of one job, whatever runs it: time limit, one task per GPU, the GPUs."""
        tasks = self.tasks_per_node or max(1, self.gpus_per_node)
        params: dict[str, Any] = {"timeout_min": self.timeout_min, "tasks_per_node": tasks, "nodes": 1}
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        return params

    def allocation_params(self) -> dict[str, Any]:
        """What a scheduler allocates a job besides its GPUs, as submitit's generic parameters (each plugin
        turns them into its scheduler's options)."""
        return {"cpus_per_task": self.cpus_per_task, "mem_gb": self.mem_gb}


GENERIC_KEYS = tuple(f.name for f in fields(ClusterProfile) if f.name not in ("extras", "source"))


def profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.yaml"))


def load_profile(name_or_path: str, overrides: list[str] = ()) -> ClusterProfile:
    """The profile ``name_or_path`` (a name under slurm/profiles or a YAML file) with ``overrides`` (KEY=VALUE);
    keys that are not generic are kept as written in ``extras`` for the executor to check."""
    path = Path(name_or_path)
    if not path.is_file():
        path = PROFILES / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown cluster profile {name_or_path!r} (known: {', '.join(profiles())}, or a YAML path)")
    data = read_yaml(path)
    for text in overrides:
        keys, value = parse_override(text)
        data[".".join(keys)] = value
    hints = typing.get_type_hints(ClusterProfile)
    values = {k: _coerce(v, hints[k], f"{path}: {k}") for k, v in data.items() if k in GENERIC_KEYS}
    extras = {k: v for k, v in data.items() if k not in GENERIC_KEYS}
    return replace(ClusterProfile(), **values, extras=extras, source=str(path))


def read_options(profile: ClusterProfile, executor: str, schedulers: Mapping[str, type[Options]],
                 strict: bool) -> Options:
    """The keys of ``profile`` that ``executor``'s options dataclass (``schedulers[executor]``) declares,
    typed. A key of another scheduler is an error when ``strict`` (a scheduler would ignore it silently), else
    left aside (local and debug run the job here: only the generic keys apply); a key of none is a typo."""
    mine = schedulers[executor]
    hints = typing.get_type_hints(mine)
    owners = {f.name: name for name, cls in schedulers.items() for f in fields(cls)}
    values = {}
    for key, value in profile.extras.items():
        if key in hints:
            values[key] = _coerce(value, hints[key], f"{profile.source}: {key}")
        elif key not in owners:
            known = "; ".join([f"generic: {', '.join(GENERIC_KEYS)}"] + [
                f"{name}: {', '.join(f.name for f in fields(cls))}" for name, cls in schedulers.items() if fields(cls)])
            raise ConfigError(f"{profile.source}: unknown profile key '{key}' (known: {known})")
        elif strict:
            own = ", ".join(f.name for f in fields(mine)) or "none"
            raise ConfigError(f"{profile.source}: profile key '{key}' is for --executor {owners[key]}, not "
                              f"--executor {executor} (its own keys: {own}; and the generic ones); use a profile of "
                              f"{executor} or remove the key")
    return mine(**values)

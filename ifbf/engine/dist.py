"""torch.distributed from torchrun's environment variables (NCCL on GPU, gloo on CPU). A scheduler's own
launcher (srun) names ranks its own way: the command line exports them as torchrun's first
(``orchestrate.executors.export_launched_ranks``), so the engine reads one set of names."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ifbf.config import Config
from ifbf.errors import IfbfError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _env_int(*names: str) -> int | None:
    for name in names:
        if os.environ.get(name):
            return int(os.environ[name])
    return None


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group described by RANK/WORLD_SIZE/LOCAL_RANK with MASTER_ADDR/PORT (torchrun,
    submitit's TorchDistributedEnvironment, or a scheduler's launcher through the command line); else one
    process."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK") or 0)
    world = _env_int("WORLD_SIZE") or 1
    if world == 1:
        return DistInfo()
    rank = _env_int("RANK") or 0
    local_rank = _env_int("LOCAL_RANK") or 0
    os.environ.setdefault("MASTER_PORT", "29500")
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def resolve_device(cfg: Config, local_rank: int = 0) -> torch.device:
    want = cfg.runtime.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise IfbfError("runtime.device asks for CUDA but no GPU is visible here; use runtime.device=cpu")
    return torch.device(f"cuda:{local_rank}" if want == "cuda" else want)


def setup(cfg: Config) -> tuple[DistInfo, torch.device]:
    """Join the process group (if any) and pick this process's device."""
    dist_info = init_distributed(resolve_device(cfg).type)
    return dist_info, resolve_device(cfg, dist_info.local_rank)

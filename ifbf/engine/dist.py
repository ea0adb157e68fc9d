"""torch.distributed from torchrun or SLURM environment variables (NCCL on GPU, gloo on CPU)."""

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
    """Join the process group described by RANK/WORLD_SIZE (torchrun, or submitit's
    TorchDistributedEnvironment) or SLURM_PROCID/SLURM_NTASKS with MASTER_ADDR/PORT set; else one process."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", "SLURM_LOCALID") or 0)
    world = _env_int("WORLD_SIZE") or (_env_int("SLURM_NTASKS") if os.environ.get("MASTER_ADDR") else None) or 1
    if world == 1:
        return DistInfo()
    rank = _env_int("RANK", "SLURM_PROCID") or 0
    local_rank = _env_int("LOCAL_RANK", "SLURM_LOCALID") or 0
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

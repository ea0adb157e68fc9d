"""What a run ran on: code version, package versions, the CUDA stack and the host, as recorded in the run's
env.json (``ifbf.store.runtypes.Environment``; the run store writes the file, this module only looks around)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ifbf import __version__
from ifbf.store.runtypes import Environment

REPO = Path(__file__).resolve().parents[2]  # the repository root


def capture(device: str, world: int, weights: dict[str, Any] | None = None,
            dataset: dict[str, Any] | None = None) -> Environment:
    """env.json's content: code version, packages, the CUDA stack (from torch.utils.collect_env) and the run's
    inputs the engine names (``weights``: the ImageNet weights file, ``dataset``: the verified manifest)."""
    # torch only here: the orchestrator and the reports read run dirs without paying for its import
    import torch
    from torch.utils import collect_env

    commit, dirty = git_state()
    return Environment(
        git_commit=commit,
        git_dirty=dirty,
        ifbf=__version__,
        python=sys.version.split()[0],
        torch=torch.__version__,
        torchvision=_version("torchvision"),
        numpy=np.__version__,
        inplace_abn=_version("inplace_abn"),
        device=device,
        cuda_device=torch.cuda.get_device_name() if device.startswith("cuda") else None,
        world_size=world,
        host=platform.node(),
        **_cuda_stack(torch, collect_env),
        weights=weights,
        dataset=dataset,
    )


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - optional packages
        return None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, whether the work tree has changes) of the ifbf checkout; (None, None) without git."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True,
                                    text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def _cuda_stack(torch: Any, collect_env: Any) -> dict[str, Any]:
    """CUDA, cuDNN, NCCL, driver, GPU models and count (None where absent), via torch.utils.collect_env."""
    cuda = torch.cuda.is_available()
    nccl = torch.cuda.nccl.version() if cuda and hasattr(torch.cuda, "nccl") else None
    return {
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
        "driver": collect_env.get_nvidia_driver_version(collect_env.run) if cuda else None,
        "gpus": collect_env.get_gpu_info(collect_env.run) if cuda else None,
        "gpu_count": torch.cuda.device_count(),
    }

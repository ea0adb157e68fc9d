"""Checkpoints: save and load (atomically, refusing another config's file), RNG state for exact resume,
and a model rebuilt from a checkpoint for inference."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ifbf.config import Config, load_config, to_dict

from ifbf.identity import config_hash
from ifbf.errors import IfbfError
from ifbf.models import IFBFNet, build_model
from ifbf.rundir import RunDir


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: Path, cfg: Config, it: int, model: nn.Module, optimizer, scheduler, scaler) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    state = {
        "iter": it,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, cfg: Config, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint gets the same message
        raise IfbfError(f"cannot read checkpoint {path}: {err}") from None
    if state.get("config_hash") != config_hash(cfg):
        raise IfbfError(
            f"refusing to resume {path}: it was trained with config hash {state.get('config_hash')}, "
            f"but this config has hash {config_hash(cfg)}. Use another run directory for a different config."
        )
    return state


def model_dtype(cfg: Config) -> torch.dtype:
    return torch.float64 if cfg.train.float64 else torch.float32


def model_from_checkpoint(cfg: Config, path: Path, device: torch.device) -> tuple[IFBFNet, dict[str, Any]]:
    """(model in eval mode with the checkpoint's weights, the checkpoint); refuses another config's file."""
    state = load_checkpoint(path, cfg, device)
    model = build_model(cfg.model).to(device, model_dtype(cfg))
    model.load_state_dict(state["model"])
    return model.eval(), state


@dataclass(frozen=True)
class TrainedModel:
    """Where a trained model comes from: a run directory, or a config with a checkpoint file."""

    cfg: Config
    checkpoint: Path
    run_dir: RunDir | None


def locate(run: str | Path | None = None, config: str | Path | None = None, checkpoint: str | Path | None = None,
           overrides: list[str] | tuple[str, ...] = ()) -> TrainedModel:
    """The config and checkpoint of ``run`` (its config.yaml and checkpoint.pth, ``overrides`` applied), or of
    ``config`` with ``checkpoint``; the checkpoint must exist."""
    if run:
        run_dir = RunDir(run)
        cfg = run_dir.config()
        if overrides:
            cfg = load_config(Path(run) / "config.yaml", list(overrides))
        path = Path(checkpoint) if checkpoint else run_dir.checkpoint
    elif checkpoint:
        run_dir, cfg, path = None, load_config(config, list(overrides)), Path(checkpoint)
    else:
        raise IfbfError("give --run RUN_DIR, or --config FILE with --checkpoint FILE")
    if not path.is_file():
        raise IfbfError(f"checkpoint not found: {path} (has the run trained yet? `ifbf train` writes it)")
    return TrainedModel(cfg, path, run_dir)


def resume(path: Path, cfg: Config, model: nn.Module, optimizer, scheduler, scaler) -> int:
    """Load the checkpoint at ``path`` (if there is one) into a fresh training state, RNG included, and
    return the iteration to continue from (0: nothing to resume)."""
    if not path.is_file():
        return 0
    state = load_checkpoint(path, cfg)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["iter"])

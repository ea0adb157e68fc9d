"""Checkpoints: save and load (atomically, keeping the one before, refusing another config's file), RNG
state for exact resume, and a model rebuilt from a checkpoint for inference.

A checkpoint is data only: tensors and plain types, loaded with ``weights_only=True``, so a file from elsewhere
cannot run code (one that needs more is refused). It carries a CRC32 of its content ("checksum"), so a
truncated file or a flipped bit is found before its weights are used; resuming then falls back to the previous
checkpoint (``checkpoint.prev.pth``, kept at every save)."""

from __future__ import annotations

import io
import os
import pickle
import random
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ifbf.config import Config, load_config, to_dict

from ifbf.identity import config_hash
from ifbf.errors import IfbfError, UnreadableCheckpoint
from ifbf.models import SegModel, build_model
from ifbf.store.rundir import PREVIOUS_CHECKPOINT, SCHEMA, RunDir
from ifbf.store.safefile import atomic_write_bytes, remove_stale_temporaries

_RECONSTRUCT = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
# What checkpoints of earlier ifbf versions pickled beyond tensors: numpy's RNG state, an ndarray (numpy 2
# and numpy 1 name its rebuilding function differently). Exactly these are allowed, nothing else.
LEGACY_NUMPY = [np.ndarray, np.dtype, (_RECONSTRUCT, "numpy._core.multiarray._reconstruct"),
                (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"), type(np.dtype(np.uint32))]
ALLOWED = {"numpy.ndarray", "numpy.dtype", "numpy._core.multiarray._reconstruct",
           "numpy.core.multiarray._reconstruct", "numpy.dtypes.UInt32DType"}


def rng_state() -> dict[str, Any]:
    """Every RNG the training draws from, as tensors and plain types (numpy's Mersenne Twister key as a tensor)."""
    numpy = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"bit_generator": numpy["bit_generator"], "key": torch.from_numpy(numpy["state"]["key"].astype(np.int64)),
                  "pos": int(numpy["state"]["pos"]), "has_gauss": int(numpy["has_gauss"]), "gauss": float(numpy["gauss"])},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    if isinstance(numpy, dict):
        numpy = (numpy["bit_generator"], numpy["key"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                 numpy["gauss"])
    np.random.set_state(numpy)  # else an earlier ifbf's checkpoint: numpy's own tuple
    random.setstate(state["python"])


def checksum(obj: Any, crc: int = 0) -> int:
    """CRC32 of a checkpoint's content (tensor bytes, keys, plain values), in its order."""
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu().contiguous().reshape(-1)
        crc = zlib.crc32(f"{tensor.dtype}{tuple(obj.shape)}".encode(), crc)
        return zlib.crc32(tensor.view(torch.uint8).numpy(), crc) if tensor.numel() else crc
    if isinstance(obj, dict):
        for key, value in obj.items():
            crc = checksum(value, zlib.crc32(repr(key).encode(), crc))
        return crc
    if isinstance(obj, (list, tuple)):
        for value in obj:
            crc = checksum(value, crc)
        return crc
    return zlib.crc32(repr(obj).encode(), crc)


def save_checkpoint(path: Path, cfg: Config, it: int, model: nn.Module, optimizer, scheduler, scaler) -> None:
    """Write atomically, the replaced checkpoint kept as ``checkpoint.prev.pth``: a crash or a full disk
    mid-write leaves both intact (``NoSpace`` names the file)."""
    state = {
        "schema": SCHEMA,
        "iter": it,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
    }
    state["checksum"] = checksum(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getbuffer(), previous=path.with_name(PREVIOUS_CHECKPOINT))


def read_checkpoint(path: Path, action: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's content, loaded without running code; ``UnreadableCheckpoint`` (one line, naming
    ``action``: resume, evaluate, export ...) for a file that is not a whole, unaltered ifbf checkpoint."""
    try:
        with torch.serialization.safe_globals(LEGACY_NUMPY):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise UnreadableCheckpoint(f"refusing to {action} {path}: it holds more than tensors and plain types "
                                   f"({_unsafe(path)}), and ifbf loads checkpoints without running code; use a "
                                   f"checkpoint written by `ifbf train`", path) from None
    except Exception as err:  # noqa: BLE001 - torch reports a damaged file in many ways
        raise _corrupt(path, action, f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}")
    if not isinstance(state, dict) or not {"iter", "model", "config_hash"} <= set(state):
        raise _corrupt(path, action, "not an ifbf checkpoint (no iteration, model and config hash in it)")
    if isinstance(state.get("schema"), int) and state["schema"] > SCHEMA:
        raise UnreadableCheckpoint(f"cannot {action} {path}: written by a newer ifbf (schema {state['schema']}; "
                                   f"this one reads schema <= {SCHEMA}): it needs an ifbf that reads schema "
                                   f"{state['schema']}", path)
    stored = state.pop("checksum", None)
    if stored is not None and stored != checksum(state):
        raise _corrupt(path, action, "its checksum does not match its content (a bit flipped on disk or in transit)")
    return state


def _unsafe(path: Path) -> str:
    try:
        names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(path) if n not in ALLOWED]
    except Exception:  # noqa: BLE001 - a damaged file: the refusal stands without the names
        names = []
    return f"it would call {', '.join(names)}" if names else "objects that are not data"


def _corrupt(path: Path, action: str, reason: str) -> UnreadableCheckpoint:
    previous = path.with_name(PREVIOUS_CHECKPOINT)
    offer = (f"; the previous checkpoint {previous} is there: resuming uses it, and --checkpoint {previous} "
             f"{action}s it" if previous.is_file() and previous != path else "")
    return UnreadableCheckpoint(f"cannot {action} {path}: truncated or corrupt ({reason}){offer}", path)


def load_checkpoint(path: Path, cfg: Config, map_location: str | torch.device = "cpu",
                    action: str = "resume") -> dict[str, Any]:
    """``read_checkpoint``, refusing a checkpoint of another training config."""
    state = read_checkpoint(path, action, map_location)
    if state.get("config_hash") != config_hash(cfg):
        raise IfbfError(
            f"refusing to {action} {path}: it was trained with config hash {state.get('config_hash')}, "
            f"but this config has hash {config_hash(cfg)}. Use another run directory for a different config."
        )
    return state


def resume_state(run_dir: RunDir, cfg: Config, main: bool = True) -> dict[str, Any] | None:
    """The checkpoint training resumes from (None: start from scratch): checkpoint.pth, or the previous one
    when it is unreadable (moved aside by ``main``, said in one line) or missing after a crash between the
    two renames of a save. ``main`` also removes the temporary checkpoints of savers that were killed."""
    last, previous = run_dir.checkpoint, run_dir.path / PREVIOUS_CHECKPOINT
    if main:
        remove_stale_temporaries(run_dir.path, cfg.runtime.lock_stale_s)
    if last.is_file():
        try:
            return load_checkpoint(last, cfg)
        except UnreadableCheckpoint as err:
            if not previous.is_file():
                raise IfbfError(f"{err}; there is no previous checkpoint: delete {last} to train from the "
                                f"start") from None
            aside = last.with_name(last.name + ".unreadable")
            if main:
                os.replace(last, aside)
                print(f"{err}; moved it to {aside.name} and resuming from {previous.name}", flush=True)
    return load_checkpoint(previous, cfg) if previous.is_file() else None


def model_dtype(cfg: Config) -> torch.dtype:
    return torch.float64 if cfg.train.float64 else torch.float32


def model_from_checkpoint(cfg: Config, path: Path, device: torch.device,
                          action: str = "evaluate") -> tuple[SegModel, dict[str, Any]]:
    """(model in eval mode with the checkpoint's weights, the checkpoint); refuses another config's file.
    ``action``: what the caller does with it, for the messages (evaluate, export, visualize)."""
    state = load_checkpoint(path, cfg, device, action)
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


def resume(run_dir: RunDir, cfg: Config, main: bool, model: nn.Module, optimizer, scheduler, scaler) -> int:
    """Load the checkpoint training resumes from (``resume_state``: the last one, else the previous one) into
    a fresh training state, RNG included, and return the iteration to continue from (0: nothing to resume)."""
    state = resume_state(run_dir, cfg, main)
    if state is None:
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["iter"])

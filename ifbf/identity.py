"""The identity of a run: which config fields decide what a training produces (its config hash), which
ImageNet weights file a model loads (by content: sha256), and the key of an inference setting.

Fields added after runs were first stored enter the identity only when they differ from the behaviour
of those runs, so earlier run directories keep their hash (and are not retrained).

The sha256 of a large file (ImageNet weights, dataset manifests) is cached by (path, size, mtime) in a small JSON
file ($XDG_CACHE_HOME/ifbf/sha256.json, default ~/.cache/ifbf): a 170 MB checkpoint takes about a second to hash
and plans hash the weights of every row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from ifbf.config import Config, ConfigError, EvalConfig, ModelConfig, WeightsConfig, to_dict

# Sections and keys that do not change what a training produces.
NOT_IDENTITY = ("eval", "runtime", "data.root", "data.fast_path", "data.cache_dir", "train.compile")

# Fields newer than the first stored runs -> the value that reproduces those runs (left out when equal).
LEGACY_DEFAULTS: dict[str, Any] = {
    "model.arch": "ifbfnet",
    "model.stem": "torchvision",
    "model.dilate_first_block": False,
    "train.aux_ohem": True,
    "model.output_stride": 16,
    "model.multi_grid": None,
    "model.pam": True,
    "model.cam": True,
    "model.pam_reduction": 8,
    "model.cam_energy": "negated",
    "model.branch_heads": True,
}


def weights_key(model: ModelConfig) -> str:
    """The ``model.weights`` entry a model uses: its backbone, plus ``_<stem>`` for a deep stem."""
    return model.backbone if model.stem == "torchvision" else f"{model.backbone}_{model.stem}"


def weights_flag_overrides(items: list[str] | tuple[str, ...]) -> list[str]:
    """``--weights resnet101=PATH resnet50_deep=none`` -> ``model.weights.<key>=...`` overrides."""
    keys = [f.name for f in dataclasses.fields(WeightsConfig)]
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in keys or not value:
            raise ConfigError(f"--weights {item!r}: expected KEY=PATH or KEY=none with KEY one of {', '.join(keys)}")
        out.append(f"model.weights.{key}={value}")
    return out


def weights_status(model: ModelConfig) -> Literal["file", "scratch", "missing"]:
    """``file``: a path is given; ``scratch``: ``none``, from scratch on purpose; ``missing``: null."""
    value = getattr(model.weights, weights_key(model))
    if value is None:
        return "missing"
    return "scratch" if value.strip().lower() == "none" else "file"


def weights_path(model: ModelConfig) -> Path | None:
    """The ImageNet weights file of this model, or None (not given, or ``none``: from scratch).

    A path that is not a file is an error here, so a plan fails before anything is submitted.
    """
    key = weights_key(model)
    if weights_status(model) != "file":
        return None
    path = Path(getattr(model.weights, key)).expanduser()
    if not path.is_file():
        variant = "" if model.stem == "torchvision" else f" --variant {model.stem}"
        raise ConfigError(
            f"model.weights.{key}: file not found: {path} (download it with `ifbf weights fetch "
            f"{model.backbone}{variant}`, or set model.weights.{key}=none to train from scratch)"
        )
    return path


def identity(cfg: Config) -> dict:
    """The part of a config that determines what a training run produces.

    ``model.weights`` is replaced by the sha256 of the one file this run loads (None: from scratch), so
    the same weights at two paths give one identity and new content at the same path another.
    """
    data = to_dict(cfg)
    path = weights_path(cfg.model)
    del data["model"]["weights"]
    if path is not None:
        data["model"]["weights"] = file_digest(path)
    else:  # from scratch, stored as earlier versions did
        data["model"]["pretrained"] = None
    for key in NOT_IDENTITY:
        _pop(data, key)
    for key, legacy in LEGACY_DEFAULTS.items():
        if _get(data, key) == legacy:
            _pop(data, key)
    splits = data["data"].pop("train_splits")
    # one split is stored as before (``train_split: X``), so run hashes of earlier versions stay valid
    data["data"]["train_split" if len(splits) == 1 else "train_splits"] = splits[0] if len(splits) == 1 else splits
    return data


def config_hash(cfg: Config) -> str:
    """Stable 12-hex-digit identity of a training run (independent of eval/runtime settings)."""
    blob = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def eval_key(cfg: EvalConfig) -> str:
    """Identity of an inference setting (scales, flip, window)."""
    data = {"scales": list(cfg.scales), "flip": cfg.flip, "window": list(cfg.window) if cfg.window else None}
    if cfg.split:
        data["split"] = cfg.split
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]


def _get(data: dict, key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def _pop(data: dict, key: str) -> None:
    *parents, last = key.split(".")
    for part in parents:
        data = data[part]
    data.pop(last)

# --- file digests ------------------------------------------------------------------------------------
CHUNK = 1 << 20


def cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "ifbf" / "sha256.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict) -> None:
    """Atomic replace; a cache that cannot be written (read-only home) only costs a re-hash."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: str | Path) -> str:
    """Hex sha256 of ``path``, from the cache when its size and mtime are those recorded there."""
    path = Path(path).resolve()
    stat = path.stat()
    key = str(path)
    cache = cache_file()
    entries = _read_cache(cache)
    entry = entries.get(key)
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])
    digest = sha256_of(path)
    entries = _read_cache(cache)  # re-read: another process may have added entries meanwhile
    entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    _write_cache(cache, entries)
    return digest

"""The run store: one run directory and every file in it. This is the only module that writes or parses
these files (atomically, never losing a finished result):

    config.yaml      resolved config (written once; a different config in the same dir is an error)
    log.jsonl        one JSON line per log step ({"iter", "loss_*", "lr", "imgs_per_s", "step_s"}) and per
                     curve validation ({"iter", "val_miou", "val_s", "val_images"})
    checkpoint.pth   model, optimizer, scheduler, scaler, RNG states, iteration, config and its hash
                     (and checkpoint.prev.pth, the one before; both data only, with a checksum)
                     (its path lives here; ``engine.checkpoint`` reads and writes its content)
    metrics.json     {"config_hash", "iters", "miou", "iou", "eval", "evaluations": {eval key: result}}
                     (a result holds "miou", "iou", "confusion" and the "seconds" it took)
    evaluations/<eval key>/per_image.npz   per image: "names", "inter", "union" ([n_images, K] int64
                     pixel counts; their column sums give the evaluation's IoUs exactly)
    env.json         git commit, package versions, device
    status.json      what the scheduler side knows: submitted / running / requeued / done / failed, with
                     job id, executor, log path, host and pid
    train.lock       held by the one process training or evaluating the run (heartbeat: its mtime)
    submit.lock      held by an orchestrator from reading the run's state until "submitted" is recorded
                     (both are ``ifbf.runlock.RunLock`` files: atomic create, safe on NFS)

Every file is written atomically (``ifbf.safefile``: a full disk raises ``NoSpace`` and keeps the previous
file) and carries the store's schema version: metrics.json, status.json and env.json a "schema" key; log.jsonl
a first line {"schema", "config_hash"}; per_image.npz "schema" and "config_hash" arrays; checkpoint.pth a
"schema" key (config.yaml is versioned by its own legacy defaults, ``ifbf.identity``). A reader gets
``UnreadableRunFile`` (run dir, file, reason) for an empty, truncated, corrupt, newer or foreign file.
"""

from __future__ import annotations

import io
import os
import json
import platform
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ifbf import __version__
from ifbf.safefile import (SCHEMA, atomic_write_bytes, atomic_write_text, check_hash, check_schema,
                           raise_if_full, read_json, write_json)
from ifbf.config import Config, EvalConfig, dump_yaml, from_dict
from ifbf.identity import config_hash, eval_key
from ifbf.errors import IfbfError, UnreadableRunFile
from ifbf.runlock import DEFAULT_STALE_S, RunLock

CHECKPOINT = "checkpoint.pth"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pth"  # the one before: resume falls back to it when the last is corrupt
METRICS = "metrics.json"
STATUS = "status.json"
ENV = "env.json"
TRAIN_LOCK = "train.lock"
SUBMIT_LOCK = "submit.lock"
RUN_FILES = (f"`config.yaml`, `log.jsonl`, `{CHECKPOINT}`, `{METRICS}` (every evaluation of it), `{ENV}`, "
             f"`{STATUS}`")  # for docs written by the reports
RESULTS = Path(__file__).resolve().parents[1] / "results"


def runs_root(preset: str, results: Path = RESULTS) -> Path:
    """Where a preset's runs live: one directory per training-config hash."""
    return results / preset / "runs"
PER_IMAGE = "per_image.npz"
LOG = "log.jsonl"
def write_status(run_dir: Path, state: str, **extra: Any) -> None:
    """Record the run's scheduler-side state; executor, log and job id carry over from the previous record
    (an unreadable previous record is replaced: the scheduler side is rewritten at every state change)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"state": state, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid()}
    try:
        previous = read_status(run_dir) or {}
    except UnreadableRunFile:
        previous = {}
    for key in ("executor", "log", "job_id", "cpus", "threads", "workers"):  # kept across state changes
        if key in previous:
            record[key] = previous[key]
    record.update(extra)
    write_json(run_dir, STATUS, record)


def read_status(run_dir: Path) -> dict | None:
    """status.json (None before any); ``UnreadableRunFile`` when it is corrupt or of a newer ifbf."""
    status = read_json(Path(run_dir), STATUS)
    if status is not None and not isinstance(status.get("state"), str):
        raise UnreadableRunFile(run_dir, STATUS, "no \"state\" in it")
    return status


def server_eval_key(cfg: EvalConfig) -> str:
    """Key of a result scored by the Cityscapes test server (imported, never computed here) for ``cfg``."""
    return f"server-{eval_key(cfg)}"


def scored_by_server(cfg: Config) -> bool:
    """Cityscapes' test labels are private: a test-split "evaluation" is an upload, scored by the server."""
    return cfg.data.dataset == "cityscapes" and (cfg.eval.split or cfg.data.val_split) == "test"


def result_key(cfg: Config) -> str:
    """The key under which the result of ``cfg``'s inference setting is stored in metrics.json."""
    return server_eval_key(cfg.eval) if scored_by_server(cfg) else eval_key(cfg.eval)


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._hash: str | None = None

    def expected_hash(self) -> str | None:
        """The config hash of the run's config.yaml, which every file that records one must carry (None: no
        readable config.yaml yet, nothing to check against)."""
        if self._hash is None:
            try:
                self._hash = config_hash(self.config())
            except IfbfError:
                return None
        return self._hash

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def log(self) -> Path:
        return self.path / LOG

    def train_lock(self, stale_s: float = DEFAULT_STALE_S) -> RunLock:
        """The lock of the one process that trains (or evaluates) this run; held for the whole job."""
        return RunLock(self.path / TRAIN_LOCK, "training", stale_s)

    def submit_lock(self, stale_s: float = DEFAULT_STALE_S) -> RunLock:
        """The lock an orchestrator holds while it reads the run's state and submits it."""
        return RunLock(self.path / SUBMIT_LOCK, "submitting", stale_s)

    def config(self) -> Config:
        path = self.path / "config.yaml"
        if not path.is_file():
            raise IfbfError(f"{self.path} is not a run directory: {path} is missing")
        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise UnreadableRunFile(self.path, "config.yaml", f"not valid YAML ({type(err).__name__})") from None
        return from_dict(data, str(path))

    def claim(self, cfg: Config) -> None:
        """Create the run dir for ``cfg``, or check that an existing one holds the same training."""
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / "config.yaml"
        if path.is_file():
            existing = self.config()
            if config_hash(existing) != config_hash(cfg):
                raise IfbfError(
                    f"{self.path} holds another run (config hash {config_hash(existing)}, this config "
                    f"{config_hash(cfg)}); choose another --out, or delete that directory to start over"
                )
        atomic_write_text(path, dump_yaml(cfg))  # eval/runtime settings may differ: keep the latest

    def metrics(self) -> dict[str, Any] | None:
        """metrics.json (None before the first evaluation); ``UnreadableRunFile`` when it is empty, truncated,
        of a newer schema or of another config."""
        metrics = read_json(self.path, METRICS, self.expected_hash())
        if metrics is not None and not isinstance(metrics.get("evaluations", {}), dict):
            raise UnreadableRunFile(self.path, METRICS, "\"evaluations\" is not an object")
        return metrics

    def finished(self, cfg: Config) -> bool:
        m = self.metrics()
        return m is not None and m.get("config_hash") == config_hash(cfg) and m.get("iters") == cfg.train.iters

    def record_evaluation(self, cfg: Config, eval_cfg: EvalConfig, result: dict, main: bool = False,
                          key: str | None = None) -> dict:
        """Add one evaluation to metrics.json (under ``key``, default ``eval_key(eval_cfg)``), keeping every
        earlier one; ``main`` makes it the headline."""
        metrics = self.metrics() or {"config_hash": config_hash(cfg), "iters": cfg.train.iters, "evaluations": {}}
        result = dict(result)
        per_image = result.pop("per_image", None)
        if per_image is not None:  # written first: metrics.json naming it means it is complete
            path = self.record_per_image(key or eval_key(eval_cfg), per_image["names"], per_image["inter"],
                                         per_image["union"], config_hash(cfg))
            result["per_image"] = str(path.relative_to(self.path))
        entry = {"eval": json.loads(json.dumps(asdict(eval_cfg))), **result}
        metrics.setdefault("evaluations", {})[key or eval_key(eval_cfg)] = entry
        if main:
            metrics.update({"miou": result["miou"], "iou": result["iou"], "eval": entry["eval"]})
        write_json(self.path, METRICS, metrics)
        return metrics

    def per_image_path(self, key: str) -> Path:
        return self.path / "evaluations" / key / PER_IMAGE

    def record_per_image(self, key: str, names: list[str], inter: np.ndarray, union: np.ndarray,
                         run_hash: str | None = None) -> Path:
        """Write the per-image intersection and union counts of evaluation ``key`` (atomically), with the
        store's schema version and the run's config hash."""
        inter, union = np.asarray(inter, dtype=np.int64), np.asarray(union, dtype=np.int64)
        if inter.ndim != 2 or inter.shape != union.shape or inter.shape[0] != len(names):
            raise ValueError(f"per-image counts: inter {inter.shape}, union {union.shape}, {len(names)} names")
        path = self.per_image_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, names=np.array(names, dtype=str), inter=inter, union=union,
                            schema=np.array(SCHEMA), config_hash=np.array(run_hash or self.expected_hash() or ""))
        atomic_write_bytes(path, buffer.getbuffer())
        return path

    def per_image(self, key: str) -> dict[str, Any] | None:
        """{"names": list[str], "inter", "union": [n_images, K] int64} of evaluation ``key``, or None;
        ``UnreadableRunFile`` when the file is truncated, corrupt, of a newer schema or of another config."""
        path = self.per_image_path(key)
        if not path.is_file():
            return None
        name = str(path.relative_to(self.path))
        try:
            with np.load(path, allow_pickle=False) as data:
                check_schema(self.path, name, int(data["schema"]) if "schema" in data else None)
                check_hash(self.path, name, str(data["config_hash"]) or None if "config_hash" in data else None,
                           self.expected_hash())
                stored = {"names": data["names"].tolist(), "inter": data["inter"], "union": data["union"]}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise UnreadableRunFile(self.path, name, f"truncated or corrupt ({type(err).__name__}: {err})") from None
        inter, union = stored["inter"], stored["union"]
        if inter.ndim != 2 or inter.shape != union.shape or inter.shape[0] != len(stored["names"]):
            raise UnreadableRunFile(self.path, name, f"inter {inter.shape}, union {union.shape} and "
                                                     f"{len(stored['names'])} names do not match")
        return stored

    def submission_dir(self, eval_cfg: EvalConfig) -> Path:
        """Where a test-split submission (labelId PNGs; the zip beside them) for ``eval_cfg`` is written."""
        return self.path / "server" / eval_key(eval_cfg)

    def record_export(self, cfg: Config, eval_cfg: EvalConfig, archive: Path) -> dict:
        """Note in metrics.json that the test-server upload for ``eval_cfg`` exists (its score arrives later,
        through ``ifbf import-server-result``, under ``server_eval_key``)."""
        metrics = self.metrics() or {"config_hash": config_hash(cfg), "iters": cfg.train.iters, "evaluations": {}}
        metrics.setdefault("exports", {})[eval_key(eval_cfg)] = str(archive.relative_to(self.path))
        write_json(self.path, METRICS, metrics)
        return metrics

    def check(self) -> None:
        """Read every file of the run a report relies on (status.json, log.jsonl, metrics.json and each
        evaluation's per-image counts): ``UnreadableRunFile`` names the first that cannot be read."""
        read_status(self.path)
        self.read_log()
        for key in (self.metrics() or {}).get("evaluations", {}):
            self.per_image(key)

    def handled(self) -> set[str]:
        """Eval keys done for this run: evaluated here, or exported for the test server."""
        metrics = self.metrics() or {}
        return set(metrics.get("evaluations", {})) | set(metrics.get("exports", {}))

    def truncate_log(self, last_iter: int) -> None:
        """Drop log lines after ``last_iter`` (written by a run that died after its last checkpoint), and lines
        that do not parse (torn by a crash or a full disk): what resuming rewrites, it rewrites readable."""
        if not self.log.is_file():
            return
        kept = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "schema" not in record and record.get("iter", 0) <= last_iter:
                kept.append(json.dumps(record) + "\n")
        atomic_write_text(self.log, self._log_header() + "".join(kept))

    def _log_header(self) -> str:
        return json.dumps({"schema": SCHEMA, "config_hash": self.expected_hash()}) + "\n"

    def append_log(self, record: dict) -> None:
        """One line per log step; a new log starts with its header (schema version, config hash)."""
        fresh = not self.log.is_file() or self.log.stat().st_size == 0
        try:
            with self.log.open("a") as f:
                f.write((self._log_header() if fresh else "") + json.dumps(record) + "\n")
        except OSError as err:
            raise_if_full(err, self.log)
            raise

    def read_log(self) -> list[dict]:
        """The log's records (its header checked and left out); ``UnreadableRunFile`` for a line that does
        not parse, a newer schema or another config's log."""
        if not self.log.is_file():
            return []
        records = []
        for number, line in enumerate(self.log.read_text(errors="replace").splitlines(), 1):
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise UnreadableRunFile(self.path, LOG, f"line {number} is not JSON: truncated or corrupt") from None
            if not isinstance(record, dict):
                raise UnreadableRunFile(self.path, LOG, f"line {number} is not a JSON object")
            if "schema" in record:
                check_schema(self.path, LOG, record["schema"])
                check_hash(self.path, LOG, record.get("config_hash"), self.expected_hash())
            else:
                records.append(record)
        return records

    def cost(self) -> dict[str, float] | None:
        """Seconds a run took: training steps ("step_s") and curve validations ("val_s") of log.jsonl, and
        its evaluations ("seconds" in metrics.json); None for a log without timings (an older run)."""
        log = self.read_log()
        if not any("step_s" in r for r in log):
            return None
        evaluations = (self.metrics() or {}).get("evaluations", {}).values()
        return {"train": sum(r.get("step_s", 0.0) for r in log), "val": sum(r.get("val_s", 0.0) for r in log),
                "eval": sum(e.get("seconds", 0.0) for e in evaluations)}

    def env(self) -> dict[str, Any] | None:
        """env.json as written by ``write_env`` (None before the run started)."""
        return read_json(self.path, ENV)

    def write_env(self, device: str, world: int, extra: dict[str, Any] | None = None) -> None:
        """env.json: code version, packages, the CUDA stack (from torch.utils.collect_env) and ``extra``
        (the engine adds the weights and dataset digests)."""
        # torch only here: the orchestrator and the reports read run dirs without paying for its import
        import torch
        from torch.utils import collect_env

        def version(module: str) -> str | None:
            try:
                return __import__(module).__version__
            except Exception:  # noqa: BLE001 - optional packages
                return None

        repo = Path(__file__).resolve().parents[1]
        try:
            commit = subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip() or None
            dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True,
                                        text=True, timeout=10).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            commit, dirty = None, None
        env = {
            "git_commit": commit,
            "git_dirty": dirty,
            "ifbf": __version__,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torchvision": version("torchvision"),
            "numpy": np.__version__,
            "inplace_abn": version("inplace_abn"),
            "device": device,
            "cuda_device": torch.cuda.get_device_name() if device.startswith("cuda") else None,
            "world_size": world,
            "host": platform.node(),
            **_cuda_stack(torch, collect_env),
            **(extra or {}),
        }
        write_json(self.path, ENV, env)


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

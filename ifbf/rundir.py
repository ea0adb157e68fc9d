"""The run store: one run directory and every file in it. This is the only module that writes or parses
these files (atomically, never losing a finished result):

    config.yaml      resolved config (written once; a different config in the same dir is an error)
    log.jsonl        one JSON line per log step ({"iter", "loss_*", "lr", "imgs_per_s", "step_s"}) and per
                     curve validation ({"iter", "val_miou", "val_s", "val_images"})
    checkpoint.pth   model, optimizer, scheduler, scaler, RNG states, iteration, config and its hash
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

What these files say about a run is typed (``ifbf.runtypes``: ``RunState``, ``Status``, ``EvalResult``,
``PerImage``, ``RunCost``), and ``run_state`` is the one decision of a run's state from them, its locks and
an ``alive`` check; the plan, --status, the reports and the exit code all ask it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ifbf.config import Config, EvalConfig, dump_yaml, from_dict, to_dict
from ifbf.identity import config_hash, eval_key
from ifbf.errors import IfbfError
from ifbf.runlock import DEFAULT_STALE_S, RunLock, pid_alive
# what a run is, in types (defined apart so this file stays the store); importers take them from here
from ifbf.runtypes import EvalResult, PerImage, RunCost, RunState, Status  # noqa: F401

CHECKPOINT = "checkpoint.pth"
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


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


Alive = Callable[[Status], bool]  # whether the process or job a status names can still be working


def write_status(run_dir: Path, state: RunState, **fields: Any) -> Status:
    """Record the run's scheduler-side state; executor, log and job id carry over from the previous record."""
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = read_status(run_dir)
    carried = {k: getattr(previous, k) for k in Status.CARRIED} if previous else {}
    status = Status(**{"host": socket.gethostname(), "pid": os.getpid(), **carried, **fields},
                    state=RunState(state), time=time.time())
    atomic_write_text(run_dir / STATUS, json.dumps(status.to_dict(), indent=1) + "\n")
    return status


def read_status(run_dir: Path) -> Status | None:
    path = run_dir / STATUS
    return Status.from_dict(json.loads(path.read_text())) if path.is_file() else None


def process_alive(status: Status) -> bool:
    """Liveness of a job that runs as a process: its pid on this host exists; a pid on another host cannot be
    checked from here and counts as alive (its locks' heartbeats decide)."""
    if status.host and status.host != socket.gethostname():
        return True
    return status.pid is not None and pid_alive(status.pid)


def run_state(run: RunDir, iters: int, evals: Collection[str], alive: Alive, mine: str | None = None,
              stale_s: float = DEFAULT_STALE_S, run_hash: str | None = None) -> RunState:
    """The one decision of what a run is doing, from its files, its locks and ``alive`` (the executor's
    liveness check of the process or job status.json names).

    Done: metrics.json of ``iters`` iterations (of ``run_hash`` when given) with every evaluation in ``evals``
    (empty: any). Else a live lock (not ``mine``, the token of a lock the caller holds) makes it active; else
    status.json decides: failed, or active while ``alive`` says its job lives, stopped when it does not.
    """
    if run.complete(iters, evals, run_hash):
        return RunState.DONE
    status = read_status(run.path)
    if run.locked_by_other(mine, stale_s):
        return status.state if status and status.state.active else RunState.RUNNING
    if status is None or status.state in (RunState.DONE, RunState.TODO):
        return RunState.TODO
    if not status.state.active:
        return status.state
    return status.state if alive(status) else RunState.STOPPED


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

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def log(self) -> Path:
        return self.path / "log.jsonl"

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
        return from_dict(yaml.safe_load(path.read_text()), str(path))

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
        if not self.metrics_path.is_file():
            return None
        return json.loads(self.metrics_path.read_text())

    def finished(self, cfg: Config) -> bool:
        """Trained to the end as run ``cfg`` (its evaluations aside)."""
        m = self.metrics()
        return m is not None and m.get("config_hash") == config_hash(cfg) and m.get("iters") == cfg.train.iters

    def complete(self, iters: int, evals: Collection[str] = (), run_hash: str | None = None) -> bool:
        """Trained for ``iters`` (as run ``run_hash`` when given) with every evaluation key of ``evals`` done
        (evaluated, or exported for the test server); empty ``evals``: at least one."""
        m = self.metrics()
        if m is None or m.get("iters") != iters or (run_hash is not None and m.get("config_hash") != run_hash):
            return False
        handled = self.handled()
        return set(evals) <= handled if evals else bool(handled)

    def locked_by_other(self, mine: str | None = None, stale_s: float = DEFAULT_STALE_S) -> bool:
        """Whether a live process (an orchestrator submitting it, or a trainer) other than the holder of
        token ``mine`` holds one of the run's locks."""
        for lock in (self.submit_lock(stale_s), self.train_lock(stale_s)):
            owner = lock.owner()
            if owner is not None and owner.get("token") != mine and lock.stale_reason(owner) is None:
                return True
        return False

    def record_evaluation(self, cfg: Config, eval_cfg: EvalConfig, result: dict, main: bool = False,
                          key: str | None = None) -> dict:
        """Add one evaluation to metrics.json (under ``key``, default ``eval_key(eval_cfg)``), keeping every
        earlier one; ``main`` makes it the headline."""
        metrics = self.metrics() or {"config_hash": config_hash(cfg), "iters": cfg.train.iters, "evaluations": {}}
        result = dict(result)
        per_image = result.pop("per_image", None)
        if per_image is not None:  # written first: metrics.json naming it means it is complete
            path = self.record_per_image(key or eval_key(eval_cfg), per_image["names"], per_image["inter"],
                                         per_image["union"])
            result["per_image"] = str(path.relative_to(self.path))
        entry = {"eval": to_dict(eval_cfg), **result}
        metrics.setdefault("evaluations", {})[key or eval_key(eval_cfg)] = entry
        if main:
            metrics.update({"miou": result["miou"], "iou": result["iou"], "eval": entry["eval"]})
        atomic_write_text(self.metrics_path, json.dumps(metrics, indent=1) + "\n")
        return metrics

    def per_image_path(self, key: str) -> Path:
        return self.path / "evaluations" / key / PER_IMAGE

    def record_per_image(self, key: str, names: list[str], inter: np.ndarray, union: np.ndarray) -> Path:
        """Write the per-image intersection and union counts of evaluation ``key`` (atomically)."""
        inter, union = np.asarray(inter, dtype=np.int64), np.asarray(union, dtype=np.int64)
        if inter.ndim != 2 or inter.shape != union.shape or inter.shape[0] != len(names):
            raise ValueError(f"per-image counts: inter {inter.shape}, union {union.shape}, {len(names)} names")
        path = self.per_image_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with tmp.open("wb") as f:
            np.savez_compressed(f, names=np.array(names, dtype=str), inter=inter, union=union)
        os.replace(tmp, path)
        return path

    def per_image(self, key: str) -> PerImage | None:
        """The per-image counts of evaluation ``key``, or None (not stored: an older run, a server result)."""
        path = self.per_image_path(key)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return PerImage(data["names"].tolist(), data["inter"], data["union"])

    def evaluation(self, key: str) -> EvalResult | None:
        """The result stored under eval key ``key`` in metrics.json, or None."""
        entry = (self.metrics() or {}).get("evaluations", {}).get(key)
        return None if entry is None else EvalResult.from_dict(entry)

    def submission_dir(self, eval_cfg: EvalConfig) -> Path:
        """Where a test-split submission (labelId PNGs; the zip beside them) for ``eval_cfg`` is written."""
        return self.path / "server" / eval_key(eval_cfg)

    def record_export(self, cfg: Config, eval_cfg: EvalConfig, archive: Path) -> dict:
        """Note in metrics.json that the test-server upload for ``eval_cfg`` exists (its score arrives later,
        through ``ifbf import-server-result``, under ``server_eval_key``)."""
        metrics = self.metrics() or {"config_hash": config_hash(cfg), "iters": cfg.train.iters, "evaluations": {}}
        metrics.setdefault("exports", {})[eval_key(eval_cfg)] = str(archive.relative_to(self.path))
        atomic_write_text(self.metrics_path, json.dumps(metrics, indent=1) + "\n")
        return metrics

    def handled(self) -> set[str]:
        """Eval keys done for this run: evaluated here, or exported for the test server."""
        metrics = self.metrics() or {}
        return set(metrics.get("evaluations", {})) | set(metrics.get("exports", {}))

    def truncate_log(self, last_iter: int) -> None:
        """Drop log lines after ``last_iter`` (written by a run that died after its last checkpoint)."""
        if not self.log.is_file():
            return
        lines = [line for line in self.log.read_text().splitlines() if line and json.loads(line)["iter"] <= last_iter]
        atomic_write_text(self.log, "".join(line + "\n" for line in lines))

    def append_log(self, record: dict) -> None:
        with self.log.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read_log(self) -> list[dict]:
        if not self.log.is_file():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def cost(self) -> RunCost | None:
        """What the run took: training steps ("step_s") and curve validations ("val_s") of log.jsonl, and its
        evaluations ("seconds" in metrics.json), on the devices env.json and status.json name. A log of an
        older version (no "step_s") gives its training time from images/s; None: no timing in the log."""
        log = self.read_log()
        if not any("step_s" in r or "imgs_per_s" in r for r in log):
            return None
        env = self.env() or {}
        on_gpu, world = str(env.get("device", "")).startswith("cuda"), int(env.get("world_size") or 1)
        status = read_status(self.path)
        cpus = (status.cpus or status.threads) if status else None
        if any("step_s" in r for r in log):
            train_s = sum(r.get("step_s", 0.0) for r in log)
        else:
            train_s = _logged_seconds(log, self.config().data.batch_size * world)
        evaluations = (self.metrics() or {}).get("evaluations", {}).values()
        return RunCost(train_s=train_s, val_s=sum(r.get("val_s", 0.0) for r in log),
                       eval_s=sum(e.get("seconds", 0.0) for e in evaluations),
                       devices=world if on_gpu else int(cpus or 1), on_gpu=on_gpu)

    def env(self) -> dict[str, Any] | None:
        """env.json as written by ``write_env`` (None before the run started)."""
        path = self.path / ENV
        return json.loads(path.read_text()) if path.is_file() else None

    def write_env(self, env: dict[str, Any]) -> None:
        """env.json: what the run ran on (``ifbf.environment.capture``)."""
        atomic_write_text(self.path / ENV, json.dumps(env, indent=1) + "\n")


def _logged_seconds(log: list[dict], images_per_iter: int) -> float:
    """Training seconds implied by a log without step times: each record's iterations at its images/s."""
    seconds, previous = 0.0, 0
    for record in log:
        if record.get("imgs_per_s"):
            seconds += (record["iter"] - previous) * images_per_iter / record["imgs_per_s"]
        previous = record["iter"]
    return seconds

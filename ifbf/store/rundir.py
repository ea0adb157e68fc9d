"""The run store: one run directory and every file in it. This is the only module that writes or parses
these files (atomically, never losing a finished result):

    config.yaml      resolved config (written once; a different config in the same dir is an error)
    log.jsonl        one JSON line per log step ({"iter", "loss_*", "lr", "imgs_per_s", "step_s"}) and per
                     curve validation ({"iter", "val_miou", "val_s", "val_images"})
    checkpoint.pth   model, optimizer, scheduler, scaler, RNG states, iteration, config and its hash, and
                     checkpoint.prev.pth, the one before (data only, checksummed; ``engine.checkpoint``)
    metrics.json     {"config_hash", "iters", "miou", "iou", "eval", "evaluations": {eval key: result}}
                     (a result holds "miou", "iou", "confusion" and the "seconds" it took)
    evaluations/<eval key>/per_image.npz   per image: "names" and a [n_images, K] int64 array per
                     ``PER_IMAGE_COUNTS`` entry ("inter", "union": their column sums give its IoUs exactly)
    env.json         git commit, package versions, device
    status.json      what the scheduler side knows: submitted / running / requeued / done / failed, with
                     job id, executor, log path, host and pid
    train.lock       held by the one process training or evaluating the run (heartbeat: its mtime)
    submit.lock      held by an orchestrator from reading the run's state until "submitted" is recorded
                     (both are ``ifbf.store.runlock.RunLock`` files: atomic create, safe on NFS)

Every file is written atomically (``ifbf.store.safefile``: a full disk raises ``NoSpace``, the previous file stays)
with the store's schema version: a "schema" key in the JSON files and checkpoint.pth, a first line {"schema",
"config_hash"} in log.jsonl, "schema" and "config_hash" arrays in per_image.npz (config.yaml: its legacy
defaults, ``ifbf.identity``). Reading an empty, truncated, corrupt, newer or foreign file raises
``UnreadableRunFile`` (run dir, file, reason). What the files say is typed (``ifbf.store.runtypes``); ``run_state``
is the one decision of a run's state (or ``Unreadable``) for the plan, --status, the reports, the exit code.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
import zipfile
import zlib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ifbf.store.safefile import (SCHEMA, atomic_write_bytes, atomic_write_text, check_hash, check_schema, make_dirs,
                           raise_for_write, read_json, remove_stale_temporaries, write_json)
from ifbf.config import Config, EvalConfig, dump_yaml, from_dict, to_dict
from ifbf.identity import config_hash, eval_key
from ifbf.errors import IfbfError, UnreadableRunFile
from ifbf.store.runlock import DEFAULT_STALE_S, RunLock, pid_alive
from ifbf.store.runtypes import (PER_IMAGE_COUNTS, SCORES, EvalResult, PerImage, RunCost, RunState, Status,  # noqa: F401
                           env_problem, iou, log_record_problem, logged_seconds, metrics_problem,
                           per_image_problem)  # importers take them here

CHECKPOINT = "checkpoint.pth"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pth"  # the one before: resume falls back to it when the last is corrupt
METRICS = "metrics.json"
STATUS = "status.json"
ENV = "env.json"
TRAIN_LOCK = "train.lock"
SUBMIT_LOCK = "submit.lock"
PER_IMAGE = "per_image.npz"
LOG = "log.jsonl"
RUN_FILES = (f"`config.yaml`, `log.jsonl`, `{CHECKPOINT}`, `{METRICS}` (every evaluation of it), `{ENV}`, "
             f"`{STATUS}`")  # for docs written by the reports
RESULTS = Path(__file__).resolve().parents[1] / "results"


def runs_root(preset: str, results: Path = RESULTS) -> Path:
    """Where a preset's runs live: one directory per training-config hash."""
    return results / preset / "runs"


Alive = Callable[[Status], bool]  # whether the process or job a status names can still be working


def write_status(run_dir: Path, state: RunState, **fields: Any) -> Status:
    """Record the run's scheduler-side state; executor, log and job id carry over from the previous record
    (an unreadable previous record is replaced: the scheduler side is rewritten at every state change)."""
    make_dirs(run_dir)
    try:
        carried = {k: getattr(old, k) for k in Status.CARRIED} if (old := read_status(run_dir)) else {}
    except UnreadableRunFile:
        carried = {}
    status = Status(**{"host": socket.gethostname(), "pid": os.getpid(), **carried, **fields},
                    state=RunState(state), time=time.time())
    write_json(run_dir, STATUS, status.to_dict())
    return status


def read_status(run_dir: Path) -> Status | None:
    """status.json (None before any); ``UnreadableRunFile`` when it is corrupt or of a newer ifbf."""
    data = read_json(Path(run_dir), STATUS)
    try:
        return None if data is None else Status.from_dict({"time": 0.0, **data})  # an old record: no time
    except (TypeError, ValueError, KeyError) as err:
        raise UnreadableRunFile(run_dir, STATUS, f"not a status record ({type(err).__name__}: {err})") from None


def process_alive(status: Status) -> bool:
    """A job run as a process lives: its pid on this host exists (on another host: alive, its locks decide)."""
    if status.host and status.host != socket.gethostname():
        return True
    return status.pid is not None and pid_alive(status.pid)


class Unreadable(str):
    """The state of a run one of whose files cannot be read, "unreadable: <file>" (``error``: the run, the file,
    why). Neither active nor to run: nothing submits or waits for it until the file is repaired or moved."""
    active = to_run = False

    def __new__(cls, error: UnreadableRunFile) -> Unreadable:
        state = super().__new__(cls, error.cell)
        state.error = error
        return state


def run_state(run: RunDir, iters: int, evals: Collection[str], alive: Alive, mine: str | None = None,
              stale_s: float = DEFAULT_STALE_S, run_hash: str | None = None,
              check: bool = False) -> RunState | Unreadable:
    """The one decision of what a run is doing, from its files, its locks and ``alive`` (the executor's
    liveness check of the process or job status.json names). Done: metrics.json of ``iters`` iterations (of
    ``run_hash`` when given) with every evaluation in ``evals`` (empty: any). Else a live lock (not ``mine``, the
    token of a lock the caller holds) makes it active; else status.json decides: failed, or active while
    ``alive`` says its job lives, stopped when it does not. ``Unreadable``: metrics.json or status.json
    (``check``: any file a report reads, ``RunDir.check``, even of a done run) cannot be read."""
    try:
        if check:
            run.check()
        if run.complete(iters, evals, run_hash):
            return RunState.DONE
        status = read_status(run.path)
    except UnreadableRunFile as err:
        return Unreadable(err)
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
        self._hash: str | None = None

    def expected_hash(self) -> str | None:
        """The config hash every file that records one must carry (None: no readable config.yaml yet)."""
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

    def train_lock(self, stale_s: float = DEFAULT_STALE_S, job_id: str | None = None) -> RunLock:
        """The lock of the one process that trains (or evaluates) this run, held for the whole job (RunLock)."""
        return RunLock(self.path / TRAIN_LOCK, "training", stale_s, job_id=job_id)

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
        """Create the run dir for ``cfg``, or check that an existing one holds the same training; remove the
        temporary files of writers that died (a killed save's checkpoint-sized ``.checkpoint.pth.tmp*``)."""
        make_dirs(self.path)
        for folder in (self.path, *self.path.glob("evaluations/*")):
            remove_stale_temporaries(folder, cfg.runtime.lock_stale_s)
        path = self.path / "config.yaml"
        if path.is_file() and (existing := config_hash(self.config())) != config_hash(cfg):
            raise IfbfError(f"{self.path} holds another run (config hash {existing}, this config "
                            f"{config_hash(cfg)}); choose another --out, or delete that directory to start over")
        atomic_write_text(path, dump_yaml(cfg))  # eval/runtime settings may differ: keep the latest

    def metrics(self) -> dict[str, Any] | None:
        """metrics.json (None before the first evaluation); ``UnreadableRunFile``: empty, truncated, newer, foreign."""
        metrics = read_json(self.path, METRICS, self.expected_hash())
        if metrics is not None and (problem := metrics_problem(metrics)):
            raise UnreadableRunFile(self.path, METRICS, problem)
        return metrics

    def finished(self, cfg: Config) -> bool:
        """Trained to the end as run ``cfg`` (its evaluations aside)."""
        m = self.metrics()
        return m is not None and m.get("config_hash") == config_hash(cfg) and m.get("iters") == cfg.train.iters

    def complete(self, iters: int, evals: Collection[str] = (), run_hash: str | None = None) -> bool:
        """Trained ``iters`` (as ``run_hash``) with every eval key of ``evals`` evaluated or exported (empty: one)."""
        m = self.metrics()
        if m is None or m.get("iters") != iters or (run_hash is not None and m.get("config_hash") != run_hash):
            return False
        handled = self.handled()
        return set(evals) <= handled if evals else bool(handled)

    def locked_by_other(self, mine: str | None = None, stale_s: float = DEFAULT_STALE_S) -> bool:
        """Whether a live process other than the holder of token ``mine`` holds one of the run's locks."""
        for lock in (self.submit_lock(stale_s), self.train_lock(stale_s)):
            owner = lock.owner()
            if owner is not None and owner.get("token") != mine and lock.stale_reason(owner) is None:
                return True
        return False

    def record_evaluation(self, cfg: Config, eval_cfg: EvalConfig, result: dict, main: bool = False,
                          key: str | None = None) -> dict:
        """Add one evaluation to metrics.json (``key``: default ``eval_key``), keeping others; ``main``: headline."""
        metrics = self.metrics() or {"config_hash": config_hash(cfg), "iters": cfg.train.iters, "evaluations": {}}
        result = dict(result)
        per_image = result.pop("per_image", None)
        if per_image is not None:  # written first: metrics.json naming it means it is complete
            path = self.record_per_image(key or eval_key(eval_cfg), per_image["names"], per_image["counts"],
                                         config_hash(cfg))
            result["per_image"] = str(path.relative_to(self.path))
        entry = {"eval": to_dict(eval_cfg), **result}
        metrics.setdefault("evaluations", {})[key or eval_key(eval_cfg)] = entry
        if main:
            metrics.update({"miou": result["miou"], "iou": result["iou"], "eval": entry["eval"]})
        write_json(self.path, METRICS, metrics)
        return metrics

    def per_image_path(self, key: str) -> Path:
        return self.path / "evaluations" / key / PER_IMAGE

    def record_per_image(self, key: str, names: list[str], counts: Mapping[str, np.ndarray],
                         run_hash: str | None = None) -> Path:
        """Write evaluation ``key``'s per-image counts (every ``PER_IMAGE_COUNTS`` entry), atomically."""
        arrays = {name: np.asarray(a, dtype=np.int64) for name, a in counts.items()}
        if problem := per_image_problem(arrays, len(names), required=PER_IMAGE_COUNTS):
            raise ValueError(f"per-image counts: {problem}")
        path = self.per_image_path(key)
        make_dirs(path.parent)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, names=np.array(names, dtype=str), **arrays,
                            schema=np.array(SCHEMA), config_hash=np.array(run_hash or self.expected_hash() or ""))
        atomic_write_bytes(path, buffer.getbuffer())
        return path

    def per_image(self, key: str) -> PerImage | None:
        """Evaluation ``key``'s per-image counts (None: an older run, a server result); ``UnreadableRunFile``:
        truncated, corrupt, newer or foreign."""
        path = self.per_image_path(key)
        if not path.is_file():
            return None
        name = str(path.relative_to(self.path))
        try:
            with np.load(path, allow_pickle=False) as data:
                check_schema(self.path, name, int(data["schema"]) if "schema" in data else None)
                check_hash(self.path, name, str(data["config_hash"]) or None if "config_hash" in data else None,
                           self.expected_hash())
                return PerImage.of({k: data[k] for k in data.files if k not in ("schema", "config_hash")})
        except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            kind = "zlib.error" if isinstance(err, zlib.error) else type(err).__name__
            raise UnreadableRunFile(self.path, name, f"truncated or corrupt ({kind}: {str(err)[:120]})") from None

    def evaluation(self, key: str) -> EvalResult | None:
        """The result stored under eval key ``key`` in metrics.json, or None."""
        entry = (self.metrics() or {}).get("evaluations", {}).get(key)
        return None if entry is None else EvalResult.from_dict(entry)

    def submission_dir(self, eval_cfg: EvalConfig) -> Path:
        """Where a test-split submission (labelId PNGs; the zip beside them) for ``eval_cfg`` is written."""
        return self.path / "server" / eval_key(eval_cfg)

    def record_export(self, cfg: Config, eval_cfg: EvalConfig, archive: Path) -> dict:
        """Note in metrics.json that the test-server upload for ``eval_cfg`` exists (scored: ``server_eval_key``)."""
        metrics = self.metrics() or {"config_hash": config_hash(cfg), "iters": cfg.train.iters, "evaluations": {}}
        metrics.setdefault("exports", {})[eval_key(eval_cfg)] = str(archive.relative_to(self.path))
        write_json(self.path, METRICS, metrics)
        return metrics

    def check(self) -> None:
        """Read every file a report relies on: ``UnreadableRunFile`` names the first that cannot be read."""
        read_status(self.path)
        self.env()
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
            if isinstance(record, dict) and "schema" not in record and not log_record_problem(record) \
                    and record["iter"] <= last_iter:
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
            raise_for_write(err, self.log)
            raise

    def read_log(self) -> list[dict]:
        """The log's records (its header checked, left out); ``UnreadableRunFile``: torn, newer or foreign."""
        if not self.log.is_file():
            return []
        records = []
        lines = enumerate(self.log.read_text(errors="replace").splitlines(), 1)
        for number, line in ((n, line) for n, line in lines if line):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise UnreadableRunFile(self.path, LOG, f"line {number} is not JSON: truncated or corrupt") from None
            if not isinstance(record, dict):
                raise UnreadableRunFile(self.path, LOG, f"line {number} is not a JSON object")
            if "schema" in record:
                check_schema(self.path, LOG, record["schema"])
                check_hash(self.path, LOG, record.get("config_hash"), self.expected_hash())
            elif problem := log_record_problem(record):
                raise UnreadableRunFile(self.path, LOG, f"line {number}: {problem}")
            else:
                records.append(record)
        return records

    def cost(self) -> RunCost | None:
        """What the run took: training steps ("step_s") and validations ("val_s") of log.jsonl, evaluations
        ("seconds", metrics.json), on the devices of env.json / status.json (an old log: images/s; None: no timing)."""
        log = self.read_log()
        if not any("step_s" in r or "imgs_per_s" in r for r in log):
            return None
        env = self.env() or {}
        on_gpu, world = str(env.get("device", "")).startswith("cuda"), int(env.get("world_size") or 1)
        status = read_status(self.path)
        cpus = (status.cpus or status.threads) if status else None
        train_s = (sum(r.get("step_s", 0.0) for r in log) if any("step_s" in r for r in log)
                   else logged_seconds(log, self.config().data.batch_size * world))
        evaluations = (self.metrics() or {}).get("evaluations", {}).values()
        return RunCost(train_s=train_s, val_s=sum(r.get("val_s", 0.0) for r in log),
                       eval_s=sum(e.get("seconds") or 0.0 for e in evaluations),
                       devices=world if on_gpu else int(cpus or 1), on_gpu=on_gpu)

    def env(self) -> dict[str, Any] | None:
        """env.json as written by ``write_env`` (None before the run started); ``UnreadableRunFile``: torn."""
        env = read_json(self.path, ENV)
        if env is not None and (problem := env_problem(env)):
            raise UnreadableRunFile(self.path, ENV, problem)
        return env

    def write_env(self, env: dict[str, Any]) -> None:
        """env.json: what the run ran on (``ifbf.store.environment.capture``), with the store's schema version."""
        write_json(self.path, ENV, env)


"""The run store: one run directory and every file in it. This module and its two collaborators (``evaluations``:
metrics.json and per_image.npz; ``runlog``: log.jsonl) are the only code that writes or parses these files
(atomically, never losing a finished result):

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
``UnreadableRunFile`` (run dir, file, reason). What the files say is typed (``ifbf.store.runtypes``: ``Status``,
``EvalResult``, ``PerImage``, ``StepRecord``/``ValRecord``, ``Environment``; the locks' ``LockOwner``); ``run_state``
is the one decision of a run's state (or ``Unreadable``) for the plan, --status, the reports, the exit code.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ifbf.config import Config, EvalConfig, dump_yaml, from_dict
from ifbf.errors import IfbfError, UnreadableRunFile
from ifbf.identity import config_hash, eval_key
from ifbf.store.evaluations import METRICS, PER_IMAGE, EvaluationFiles  # noqa: F401 - PER_IMAGE: importers take it here
from ifbf.store.runlock import DEFAULT_STALE_S, RunLock, pid_alive
from ifbf.store.runlog import LOG, RunLog  # noqa: F401
from ifbf.store.runtypes import (PER_IMAGE_COUNTS, SCORES, Environment, EvalResult, LogRecord, PerImage,  # noqa: F401
                                 RunCost, RunState, Status, StepRecord, Submission, ValRecord, iou, logged_seconds)
from ifbf.store.safefile import (SCHEMA, atomic_write_text, make_dirs, read_json,  # noqa: F401 - SCHEMA: re-exported
                                 remove_stale_temporaries, write_json)

CHECKPOINT = "checkpoint.pth"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pth"  # the one before: resume falls back to it when the last is corrupt
STATUS = "status.json"
ENV = "env.json"
TRAIN_LOCK = "train.lock"
SUBMIT_LOCK = "submit.lock"
RUN_FILES = (f"`config.yaml`, `log.jsonl`, `{CHECKPOINT}`, `{METRICS}` (every evaluation of it), `{ENV}`, "
             f"`{STATUS}`")  # for docs written by the reports
RESULTS = Path(__file__).resolve().parents[2] / "results"  # the repository's results/


def runs_root(preset: str, results: Path = RESULTS) -> Path:
    """Where a preset's runs live: one directory per training-config hash."""
    return results / preset / "runs"


Alive = Callable[[Status], bool]  # whether the process or job a status names can still be working


def write_status(run_dir: Path, state: RunState, submission: Submission | None = None, **fields: Any) -> Status:
    """Record the run's scheduler-side state: ``submission`` (what the executor keeps of a submitted job), then
    ``fields`` (other ``Status`` fields: the job's CPUs, an error, where a requeued job stopped). Executor, log,
    job id and CPUs carry over from the previous record (an unreadable previous record is replaced: the
    scheduler side is rewritten at every state change)."""
    make_dirs(run_dir)
    try:
        carried = {k: getattr(old, k) for k in Status.CARRIED} if (old := read_status(run_dir)) else {}
    except UnreadableRunFile:
        carried = {}
    submitted = dataclasses.asdict(submission) if submission else {}
    status = Status(**{"host": socket.gethostname(), "pid": os.getpid(), **carried, **submitted, **fields},
                    state=RunState(state), time=time.time())
    write_json(run_dir, STATUS, status.to_json())
    return status


def read_status(run_dir: Path) -> Status | None:
    """status.json (None before any); ``UnreadableRunFile`` when it is corrupt or of a newer ifbf."""
    data = read_json(Path(run_dir), STATUS)
    try:
        return None if data is None else Status.from_json({"time": 0.0, **data})  # an old record: no time
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
    """One run directory: its config, its locks and what it cost here; its evaluation files and its log through
    two collaborators (``evaluations``: metrics.json and per_image.npz; ``training_log``: log.jsonl)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._hash: str | None = None
        self.evaluations = EvaluationFiles(self.path, self.expected_hash)
        self.training_log = RunLog(self.path, self.expected_hash)

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
        return self.training_log.path

    def train_lock(self, stale_s: float = DEFAULT_STALE_S, job_id: str | None = None) -> RunLock:
        """The lock of the one process that trains (or evaluates) this run, held for the whole job (RunLock)."""
        return RunLock(self.path / TRAIN_LOCK, "training", stale_s, job_id=job_id)

    def submit_lock(self, stale_s: float = DEFAULT_STALE_S) -> RunLock:
        """The lock an orchestrator holds while it reads the run's state and submits it."""
        return RunLock(self.path / SUBMIT_LOCK, "submitting", stale_s)

    def locked_by_other(self, mine: str | None = None, stale_s: float = DEFAULT_STALE_S) -> bool:
        """Whether a live process other than the holder of token ``mine`` holds one of the run's locks."""
        for lock in (self.submit_lock(stale_s), self.train_lock(stale_s)):
            owner = lock.owner()
            if owner is not None and owner.token != mine and lock.stale_reason(owner) is None:
                return True
        return False

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

    def check(self) -> None:
        """Read every file a report relies on: ``UnreadableRunFile`` names the first that cannot be read."""
        read_status(self.path)
        self.env()
        self.read_log()
        self.evaluations.check()

    def submission_dir(self, eval_cfg: EvalConfig) -> Path:
        """Where a test-split submission (labelId PNGs; the zip beside them) for ``eval_cfg`` is written."""
        return self.path / "server" / eval_key(eval_cfg)

    def cost(self) -> RunCost | None:
        return run_cost(self)

    def env(self) -> Environment | None:
        """env.json as written by ``write_env`` (None before the run started); ``UnreadableRunFile``: torn."""
        data = read_json(self.path, ENV)
        try:
            return None if data is None else Environment.from_json(data)
        except ValueError as err:
            raise UnreadableRunFile(self.path, ENV, str(err)) from None

    def write_env(self, env: Environment) -> None:
        """env.json: what the run ran on (``ifbf.store.environment.capture``), with the store's schema version."""
        write_json(self.path, ENV, env.to_json())

    # --- the collaborators' files, by the names every caller knows -------------------------------------------
    def metrics(self) -> dict[str, Any] | None:
        return self.evaluations.metrics()

    def record_evaluation(self, cfg: Config, eval_cfg: EvalConfig, result: EvalResult, main: bool = False,
                          key: str | None = None) -> dict[str, Any]:
        return self.evaluations.record(cfg, eval_cfg, result, main, key)

    def record_export(self, cfg: Config, eval_cfg: EvalConfig, archive: Path) -> dict[str, Any]:
        return self.evaluations.record_export(cfg, eval_cfg, archive)

    def evaluation(self, key: str) -> EvalResult | None:
        return self.evaluations.evaluation(key)

    def handled(self) -> set[str]:
        return self.evaluations.handled()

    def per_image_path(self, key: str) -> Path:
        return self.evaluations.per_image_path(key)

    def record_per_image(self, key: str, names: list[str], counts: Mapping[str, np.ndarray],
                         run_hash: str | None = None) -> Path:
        return self.evaluations.record_per_image(key, names, counts, run_hash)

    def per_image(self, key: str) -> PerImage | None:
        return self.evaluations.per_image(key)

    def append_log(self, record: LogRecord) -> None:
        self.training_log.append(record)

    def read_log(self) -> list[LogRecord]:
        return self.training_log.read()

    def truncate_log(self, last_iter: int) -> None:
        self.training_log.truncate(last_iter)


def run_cost(run: RunDir) -> RunCost | None:
    """What ``run`` took: training steps ("step_s") and validations ("val_s") of log.jsonl, evaluations ("seconds",
    metrics.json), on the devices of env.json / status.json (an old log: images/s; None: no timing)."""
    log = run.read_log()
    steps = [r for r in log if isinstance(r, StepRecord)]
    if not any(r.step_s is not None or r.imgs_per_s is not None for r in steps):
        return None
    env = run.env() or Environment()
    world = env.world_size or 1
    status = read_status(run.path)
    cpus = (status.cpus or status.threads) if status else None
    train_s = (sum(r.step_s or 0.0 for r in steps) if any(r.step_s is not None for r in steps)
               else logged_seconds(log, run.config().data.batch_size * world))
    evaluations = (run.metrics() or {}).get("evaluations", {}).values()
    return RunCost(train_s=train_s, val_s=sum(r.val_s or 0.0 for r in log if isinstance(r, ValRecord)),
                   eval_s=sum(e.get("seconds") or 0.0 for e in evaluations),
                   devices=world if env.on_gpu else int(cpus or 1), on_gpu=env.on_gpu)

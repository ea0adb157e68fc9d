"""``reproduce.py --preflight``: measure before spending. The planned trainings are grouped by compute shape
(everything that changes speed or memory: the model's parts, norm, crop, batch per process, processes,
AMP / channels_last / float64, loader workers, image size); one short real job per shape runs through the
same executor and profile as the real runs (``PreflightJob``, see ``engine.measure``), and the figures land
in ``results/<preset>/preflight.json``, one entry per shape. Nothing is written into run directories.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ifbf.config import Config, EvalConfig, from_dict, to_dict
from ifbf.experiments import row_label
from ifbf.identity import file_digest
from ifbf.identity import eval_key, weights_path
from ifbf.orchestrate.cluster import ClusterProfile
from ifbf.orchestrate.executors import Executor
from ifbf.orchestrate.jobs import _setup_distributed
from ifbf.orchestrate.plan import Plan, Training
from ifbf.errors import UnreadableRunFile
from ifbf.store.measurement import Measurement, Preflight, PreflightFailure, preflight_from_json
from ifbf.store.rundir import atomic_write_text
from ifbf.store.safefile import make_dirs, read_json, writing

PREFLIGHT = "preflight.json"


def shape_of(cfg: Config, profile: ClusterProfile) -> dict:
    """The fields of a training that change its speed or memory (not seeds, learning rate, λ, iterations)."""
    # the weights by content, as in the run identity: a moved weights file keeps its measurements
    path = weights_path(cfg.model)
    model = {**to_dict(cfg.model), "weights": file_digest(path) if path else None}
    data = cfg.data
    return {
        "model": model,
        "data": {"dataset": data.dataset, "crop_size": list(data.crop_size), "batch_size": data.batch_size,
                 "scales": list(data.scales), "fast_path": data.fast_path,
                 "image": [data.synth.height, data.synth.width] if data.dataset == "synthetic" else "cityscapes"},
        "train": {"amp": cfg.train.amp, "channels_last": cfg.train.channels_last, "float64": cfg.train.float64,
                  "compile": cfg.train.compile,
                  "ohem": cfg.train.ohem, "deterministic": cfg.train.deterministic},
        "runtime": {"workers": cfg.runtime.workers, "device": cfg.runtime.device},
        "processes": profile.tasks_per_node or max(1, profile.gpus_per_node),
        "gpus": profile.gpus_per_node,
    }


def shape_hash(shape: dict) -> str:
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:10]


def val_setting(cfg: Config) -> EvalConfig:
    """The inference setting of the curves (``runtime.val_every``): single scale, no flip."""
    return dataclasses.replace(cfg.eval, scales=(1.0,), flip=False, split=None)


@dataclass
class Shape:
    """One compute shape and the trainings (with every inference setting asked of them) that share it."""

    key: str
    shape: dict
    cfg: Config  # the first training's config: the one measured
    trainings: list[Training] = field(default_factory=list)
    evals: dict[str, EvalConfig] = field(default_factory=dict)

    def rows(self) -> list[str]:
        return sorted({row_label(c.table, c.row.name, c.paper) for t in self.trainings for c in t.cells})


def group_shapes(plan: Plan, profile: ClusterProfile) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {}
    for training in plan.trainings.values():
        shape = shape_of(training.cfg, profile)
        key = shape_hash(shape)
        group = shapes.setdefault(key, Shape(key, shape, training.cfg))
        group.trainings.append(training)
        settings = list(training.evals) + ([val_setting(training.cfg)] if training.cfg.runtime.val_every else [])
        for setting in settings:
            group.evals.setdefault(eval_key(setting), setting)
    return shapes


def explain(error: str) -> tuple[str, str]:
    """(cause, fix) of a failed preflight job, from its exception text."""
    text = error.lower()
    if "out of memory" in text:
        return ("out of GPU memory", "lower data.batch_size or data.crop_size, use train.amp=bf16, or ask the "
                "profile for a GPU with more memory (constraint)")
    if "no kernel image" in text or "inplace_abn" in text and ("cuda" in text or "import" in text):
        return ("InPlace-ABN has no CUDA kernel for this GPU", "rebuild inplace-abn on the GPU node with "
                "TORCH_CUDA_ARCH_LIST set to its compute capability (docs/install.md), or use model.norm=syncbn")
    if "nccl" in text or "timed out" in text or "timeout" in text:
        return ("the processes of the job could not talk (NCCL / process group timeout)", "check the node's "
                "network interface (NCCL_SOCKET_IFNAME), run once with NCCL_DEBUG=INFO, or use gpus_per_node: 1")
    if "dataerror" in text or "cityscapes" in text or "no such file" in text:
        return ("the dataset cannot be read", "set CITYSCAPES_DATASET on the compute nodes (or data.root), "
                "or use --preset smoke")
    last = error.strip().splitlines()[-1] if error.strip() else "unknown error"
    return (last[:300], "see the job's log under results/<preset>/.preflight/")


class PreflightJob:
    """Measure one compute shape (a picklable job: plain data only). Returns its ``Measurement`` or a
    ``PreflightFailure``."""

    def __init__(self, config: dict, evals: list[dict], warmup: int | None, iters: int | None,
                 threads: int | None = None, scratch: str | None = None) -> None:
        self.config, self.evals, self.warmup, self.iters, self.threads = config, evals, warmup, iters, threads
        self.scratch = scratch

    def __call__(self) -> Preflight | None:
        started = time.perf_counter()
        # torch and the engine only inside the job: planning and submitting must not pay for importing them
        import torch

        from ifbf.engine.measure import measure

        if self.threads:
            torch.set_num_threads(self.threads)
        _setup_distributed()
        cfg = from_dict(self.config, "preflight job config")
        try:
            evals = [from_dict({**self.config, "eval": e}).eval for e in self.evals]
            return measure(cfg, evals, self.warmup, self.iters, started=started,
                           scratch=Path(self.scratch) if self.scratch else None)
        except Exception as err:  # noqa: BLE001 - every failure becomes one line with its fix
            cause, fix = explain(f"{type(err).__name__}: {err}\n{traceback.format_exc()}")
            first_line = (str(err).strip().splitlines() or [""])[0][:300]
            return PreflightFailure(f"{type(err).__name__}: {first_line}", cause, fix)


def preflight_path(results: Path, preset: str) -> Path:
    return results / preset / PREFLIGHT


def read_preflight(results: Path, preset: str) -> dict[str, Preflight]:
    """{shape key: record} from results/<preset>/preflight.json (empty when there is none); ``UnreadableRunFile``
    naming the file when it is torn, not an object of shapes, or a record lacks a figure --plan prices with."""
    folder = results / preset
    data = read_json(folder, PREFLIGHT)
    if data is None:
        return {}
    shapes = data.get("shapes")
    if not isinstance(shapes, dict):
        raise UnreadableRunFile(folder, PREFLIGHT, f'"shapes" is {type(shapes).__name__}, not an object of shapes')
    records = {}
    for key, record in shapes.items():
        try:
            records[key] = preflight_from_json(record)
        except ValueError as err:
            raise UnreadableRunFile(folder, PREFLIGHT, f"shape {key}: {err}") from None
    return records


def measurements(results: Path, preset: str) -> dict[str, Preflight]:
    """``read_preflight`` for the commands that only price (--plan, --status, --design): a damaged file is one
    warning naming it, and every training reads "not measured"."""
    try:
        return read_preflight(results, preset)
    except UnreadableRunFile as err:
        print(f"warning: {err}; costs are not measured: run --preflight again (it keeps the damaged file as "
              f"{PREFLIGHT}.unreadable and writes a new one)", file=sys.stderr)
        return {}


def _record(shape: Shape, result: Preflight) -> Preflight:
    return dataclasses.replace(result, shape=shape.shape, rows=tuple(shape.rows()), trainings=len(shape.trainings))


def run_preflight(plan: Plan, executor: Executor, results: Path, iters: int | None,
                  warmup: int | None = None) -> dict[str, Preflight]:
    """Run one preflight job per shape (in the executor's rounds: one at a time on this machine, so that a
    measurement never shares the cores with another; all at once on a scheduler), with the threads per job the
    runs will get, and return {shape key: record} (``merge`` adds them to preflight.json). Failed shapes
    carry "error" and "fix"."""
    shapes = list(group_shapes(plan, executor.profile).values())
    scratch = results / plan.preset.name / ".preflight"
    threads = executor.threads_per_job()

    def job_of(shape: Shape) -> PreflightJob:
        evals = [to_dict(e) for e in shape.evals.values()]
        return PreflightJob(to_dict(shape.cfg), evals, warmup, iters, threads, str(scratch / shape.key))

    records: dict[str, Preflight] = {}
    step = executor.round_size(len(shapes)) if executor.detached else 1
    for start in range(0, len(shapes), step):
        batch = shapes[start : start + step]
        for shape, job in zip(batch, executor.submit(scratch, [job_of(s) for s in batch], max_requeues=0)):
            records[shape.key] = _record(shape, _outcome(job))
    return records


def _outcome(job) -> Preflight:
    try:
        result = job.result()
    except Exception as err:  # noqa: BLE001 - a killed or failed job (OOM killer, time limit) is one line
        cause, fix = explain(str(err))
        log = getattr(getattr(job, "paths", None), "stderr", None)
        return PreflightFailure(cause, cause, fix + (f"; log: {log}" if log else ""))
    if isinstance(result, (Measurement, PreflightFailure)):
        return result
    return PreflightFailure("the job returned nothing", "no result", "see the job's log")


def merge(results: Path, preset: str, records: dict[str, Preflight]) -> Path:
    """Add (or replace) shapes in preflight.json, keeping the shapes of other tables; a damaged file is kept
    as preflight.json.unreadable (one warning) and the new measurements start a new one."""
    path = preflight_path(results, preset)
    try:
        shapes = read_preflight(results, preset)
    except UnreadableRunFile as err:
        with writing(path):
            os.replace(path, path.with_name(f"{PREFLIGHT}.unreadable"))
        print(f"warning: {err}; kept it as {PREFLIGHT}.unreadable, this preflight's shapes start a new "
              f"{PREFLIGHT}", file=sys.stderr)
        shapes = {}
    make_dirs(path.parent)
    shapes |= records
    atomic_write_text(path, json.dumps({"shapes": {k: r.to_json() for k, r in shapes.items()}}, indent=1) + "\n")
    return path


def summary_lines(records: dict[str, Preflight]) -> list[str]:
    """One line per shape: its figures, or its failure with the fix."""
    lines = []
    for key, r in records.items():
        rows = ", ".join(r.rows[:3]) + (f" (+{len(r.rows) - 3})" if len(r.rows) > 3 else "")
        if isinstance(r, PreflightFailure):
            lines.append(f"  {key}  FAILED  {rows}: {r.cause} — fix: {r.fix}")
            continue
        s = r.s_per_it
        evals = ", ".join(f"{'MS' if len(e.scales or ()) > 1 else 'SS'}{'+flip' if e.flip else ''} "
                          f"{e.s_per_img:.3f} s/img" for e in r.eval.values())
        lines.append(f"  {key}  {s.median:.3f} s/it (IQR {s.q1:.3f}-{s.q3:.3f}), {r.imgs_per_s:.1f} img/s, "
                     f"data wait {100 * r.data_wait:.0f}%, peak {r.peak_mem_gib:.2f} GiB, eval {evals}  {rows}"
                     + (f"\n    {unstable_note(r)}" if r.unstable else ""))
    return lines


def unstable_note(record: Measurement) -> str:
    """What a measurement with a wide spread of iteration times means (``engine.measure.UNSTABLE_SPREAD``)."""
    s = record.s_per_it
    return (f"unstable: iterations took {s.min:.3f}-{s.max:.3f} s (spread {100 * record.spread:.0f}% of "
            "the median): the machine was busy; rerun --preflight on an idle node")

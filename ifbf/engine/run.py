"""One run, one path: train a config (or resume it), then perform every evaluation asked of it and record
each in the run directory. ``ifbf train``, ``ifbf evaluate`` and the submitit job all come through here;
nothing else wires "load checkpoint, evaluate, record"."""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ifbf.config import Config, EvalConfig
from ifbf.data.verify import configured_root, read_manifest
from ifbf.engine.checkpoint import TrainedModel, model_from_checkpoint
from ifbf.engine.dist import DistInfo, barrier, setup
from ifbf.engine.evaluate import evaluate_run
from ifbf.engine.export import export_test_submission
from ifbf.engine.train import train
from ifbf.store.environment import capture
from ifbf.models.weights import weights_record
from ifbf.store.rundir import EvalResult, RunDir, eval_key, scored_by_server
from ifbf.store.safefile import check_writable


@dataclass(frozen=True)
class Evaluation:
    cfg: Config  # the config with the inference setting that was evaluated
    result: EvalResult
    images: int
    iteration: int  # the checkpoint's iteration
    recorded: bool  # added to the run's metrics.json
    printable: bool  # this process is the one that reports (rank 0)
    metrics_path: Path | None


def evaluate_checkpoint(source: TrainedModel, progress: bool = True, split_in_result: bool = False) -> Evaluation:
    """Evaluate a checkpoint with ``source.cfg.eval``; record the result in its run directory when it has one
    and the training is finished (earlier evaluations are kept; a run directory that cannot be written is one
    line before the evaluation, not after it). Only rank 0 records."""
    cfg = source.cfg
    dist_info, device = setup(cfg)
    model, state = model_from_checkpoint(cfg, source.checkpoint, device)
    if state["iter"] < cfg.train.iters and dist_info.main:
        print(f"note: {source.checkpoint} is at iteration {state['iter']} of {cfg.train.iters} (training not finished)")
    record = dist_info.main and source.run_dir is not None and state["iter"] >= cfg.train.iters
    if record:
        for folder in (source.run_dir.path, source.run_dir.per_image_path(eval_key(cfg.eval)).parent):
            check_writable(folder)  # metrics.json, per_image.npz
    result, dataset = evaluate_run(model, cfg, device, dist_info, progress)
    if split_in_result:
        result = dataclasses.replace(result, split=cfg.eval.split or cfg.data.val_split)
    if record:
        source.run_dir.record_evaluation(cfg, cfg.eval, result)
    metrics_path = source.run_dir.metrics_path if source.run_dir else None
    return Evaluation(cfg, result, len(dataset), state["iter"], record, dist_info.main, metrics_path)


def run(cfg: Config, out: str | Path, evals: tuple[EvalConfig, ...] | list[EvalConfig] = (), progress: bool = True,
        terminate_stops: bool = True) -> dict:
    """Train (or resume) and evaluate one run with ``cfg.eval`` (its headline result), then with each of
    ``evals`` not yet recorded; returns its metrics. A finished run is not retrained.
    ``terminate_stops``: whether SIGTERM stops the run (see ``engine.train._StopSignal``)."""
    run_dir = RunDir(out)
    dist_info, device = setup(cfg)
    if dist_info.main:
        run_dir.claim(cfg)
    barrier()
    if run_dir.finished(cfg) and run_dir.checkpoint.is_file():
        metrics = run_dir.metrics()
        if dist_info.main:
            headline = f"mIoU {100 * metrics['miou']:.2f}; " if "miou" in metrics else ""
            print(f"{run_dir.path}: already finished ({headline}nothing to train)")
    else:
        metrics = _train_and_evaluate(cfg, run_dir, dist_info, device, progress, terminate_stops)
    for eval_cfg in (cfg.eval, *evals):  # cfg.eval too: a run trained for another table may lack it
        if eval_key(eval_cfg) in run_dir.handled():
            continue
        source = TrainedModel(dataclasses.replace(cfg, eval=eval_cfg), run_dir.checkpoint, run_dir)
        if scored_by_server(source.cfg):
            export_for_server(source, progress)
        else:
            evaluate_checkpoint(source, progress)
        metrics = run_dir.metrics() or metrics
    return metrics


def export_for_server(source: TrainedModel, progress: bool = True) -> Path | None:
    """Write the test-server upload (labelId PNGs and their zip) into the run directory and note it there;
    the score comes back with ``ifbf import-server-result``. Only rank 0 exports."""
    dist_info, _ = setup(source.cfg)
    if not dist_info.main or source.run_dir is None:
        return None
    out = source.run_dir.submission_dir(source.cfg.eval)
    if out.exists():  # an interrupted export: start it over (nothing of it was recorded)
        shutil.rmtree(out)
    archive = export_test_submission(source.run_dir.path, out, source.cfg.eval, progress)
    source.run_dir.record_export(source.cfg, source.cfg.eval, archive)
    print(f"{source.run_dir.path}: test-server upload {archive}; record its score with "
          f"`ifbf import-server-result --run {source.run_dir.path} FILE`")
    return archive


def dataset_record(cfg: Config) -> dict:
    """What env.json records about the run's dataset: its root and the digest of its verified manifest."""
    root = configured_root(cfg.data) if cfg.data.dataset == "cityscapes" else None
    manifest = read_manifest(root) if root else None
    if manifest is None:
        return {"root": str(root) if root else None, "digest": None}
    return {"root": str(root), "digest": manifest.get("digest"), "partial": manifest.get("partial"),
            "verified": manifest.get("date")}


def _train_and_evaluate(cfg: Config, run_dir: RunDir, dist_info: DistInfo, device: torch.device, progress: bool,
                        terminate_stops: bool) -> dict:
    if dist_info.main:
        run_dir.write_env(capture(str(device), dist_info.world, weights_record(cfg.model), dataset_record(cfg)))
    started = time.perf_counter()
    model = train(cfg, run_dir, dist_info, device, progress, terminate_stops)
    if scored_by_server(cfg):
        barrier()
        export_for_server(TrainedModel(cfg, run_dir.checkpoint, run_dir), progress)
        barrier()
        return run_dir.metrics() or {}
    result, dataset = evaluate_run(model, cfg, device, dist_info, progress)
    metrics = run_dir.record_evaluation(cfg, cfg.eval, result, main=True) if dist_info.main else {"miou": result.miou}
    barrier()
    if dist_info.main:
        minutes = (time.perf_counter() - started) / 60
        print(f"{run_dir.path}: {cfg.train.iters} iterations, mIoU {100 * result.miou:.2f} on "
              f"{len(dataset)} {cfg.data.val_split} images ({minutes:.1f} min)")
    return metrics

"""``ifbf evaluate``: evaluate a run's checkpoint with any inference setting; the result is added to the
run's metrics.json (earlier evaluations are kept)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ifbf.config import PAPER_MS_SCALES, Config, load_config
from ifbf.config_cmd import add_config_arguments
from ifbf.errors import IfbfError


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """Which model (--run, or --config + --checkpoint) and how to infer (--ms, --flip, --scales, --window)."""
    parser.add_argument("--run", help="run directory (its config.yaml and checkpoint.pth)")
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", help="checkpoint file (with --config, instead of --run)")
    parser.add_argument("--ms", action="store_true", help=f"multi-scale: scales {list(PAPER_MS_SCALES)}")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image")
    parser.add_argument("--scales", type=float, nargs="+", help="inference scales (overrides --ms)")
    parser.add_argument("--window", type=int, nargs=2, metavar=("H", "W"), help="sliding-window crop size")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_inference_arguments(parser)
    parser.add_argument("--split", help="split to evaluate (default: data.val_split)")


def eval_settings(cfg: Config, args: argparse.Namespace) -> Config:
    e = cfg.eval
    scales = tuple(args.scales) if args.scales else PAPER_MS_SCALES if args.ms else None
    if args.scales or args.ms or args.flip or args.window:
        e = dataclasses.replace(
            e,
            scales=scales or (1.0,),
            flip=args.flip,
            window=tuple(args.window) if args.window else None,
        )
    if getattr(args, "split", None):
        e = dataclasses.replace(e, split=args.split)
    return dataclasses.replace(cfg, eval=e)


def load_run(args: argparse.Namespace):
    """(config with the requested eval settings, model with the checkpoint's weights, device, dist info,
    run dir or None, checkpoint state) from --run, or --config with --checkpoint."""
    from ifbf.engine.dist import init_distributed
    from ifbf.engine.rundir import RunDir
    from ifbf.engine.train import model_from_checkpoint, resolve_device

    if args.run:
        run_dir = RunDir(args.run)
        cfg = run_dir.config()
        if args.overrides:
            cfg = load_config(Path(args.run) / "config.yaml", args.overrides)
        checkpoint = Path(args.checkpoint) if args.checkpoint else run_dir.checkpoint
    elif args.checkpoint:
        run_dir, cfg, checkpoint = None, load_config(args.config, args.overrides), Path(args.checkpoint)
    else:
        raise IfbfError("give --run RUN_DIR, or --config FILE with --checkpoint FILE")
    if not checkpoint.is_file():
        raise IfbfError(f"checkpoint not found: {checkpoint} (has the run trained yet? `ifbf train` writes it)")
    cfg = eval_settings(cfg, args)
    dist_info = init_distributed(resolve_device(cfg).type)
    device = resolve_device(cfg, dist_info.local_rank)
    model, state = model_from_checkpoint(cfg, checkpoint, device)
    if state["iter"] < cfg.train.iters:
        print(f"note: {checkpoint} is at iteration {state['iter']} of {cfg.train.iters} (training not finished)")
    return cfg, model, device, dist_info, run_dir, state


def run(args: argparse.Namespace) -> int:
    from ifbf.engine.evaluate import evaluate_run

    cfg, model, device, dist_info, run_dir, state = load_run(args)
    split = cfg.eval.split or cfg.data.val_split
    result, dataset = evaluate_run(model, cfg, device, dist_info, not args.no_progress)
    result["split"] = split
    if dist_info.main:
        e = cfg.eval
        print(f"mIoU {100 * result['miou']:.2f}  ({split}, {len(dataset)} images, scales {list(e.scales)}, "
              f"flip {e.flip}, window {e.window})")
        for name, iou in result["iou"].items():
            print(f"  {name:14s} {'   n/a' if iou is None else f'{100 * iou:6.2f}'}")
        if run_dir and state["iter"] >= cfg.train.iters:
            run_dir.record_evaluation(cfg, cfg.eval, result)
            print(f"recorded in {run_dir.metrics_path}")
    return 0

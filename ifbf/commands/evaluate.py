"""``ifbf evaluate``: evaluate a run's checkpoint with any inference setting; the result is added to the
run's metrics.json (earlier evaluations are kept)."""

from __future__ import annotations

import argparse

from ifbf.commands.config import add_config_arguments
from ifbf.config import PAPER_MS_SCALES
from ifbf.engine.checkpoint import TrainedModel, locate
from ifbf.engine.evaluate import with_inference
from ifbf.engine.run import evaluate_checkpoint
from ifbf.errors import IfbfError
from ifbf.limits import RANGES, problem


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """Which model (--run, or --config + --checkpoint) and how to infer (--ms, --flip, --scales, --window)."""
    parser.add_argument("--run", help="run directory (its config.yaml and checkpoint.pth)")
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", help="checkpoint file (with --config, instead of --run)")
    parser.add_argument("--ms", action="store_true", help=f"multi-scale: scales {list(PAPER_MS_SCALES)}")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image")
    parser.add_argument("--scales", type=float, nargs="+",
                        help=f"inference scales, each {RANGES['eval.scales'].bound} (overrides --ms)")
    parser.add_argument("--window", type=int, nargs=2, metavar=("H", "W"),
                        help=f"sliding-window crop size, each side {RANGES['eval.window'].bound}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_inference_flags(args: argparse.Namespace) -> None:
    """--scales and --window within the ranges of the settings they set (``ifbf.limits``): one line each."""
    for flag, key, values in (("--scales", "eval.scales", args.scales), ("--window", "eval.window", args.window)):
        if values and (wrong := problem(key, tuple(values))):
            raise IfbfError(f"{flag} {' '.join(f'{v:g}' for v in values)}: {wrong}")


def trained_model(args: argparse.Namespace) -> TrainedModel:
    """The model the inference flags name, with the inference setting they ask for."""
    check_inference_flags(args)
    source = locate(args.run, args.config, args.checkpoint, args.overrides)
    cfg = with_inference(source.cfg, args.scales, args.ms, args.flip, args.window, getattr(args, "split", None))
    return TrainedModel(cfg, source.checkpoint, source.run_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_inference_arguments(parser)
    parser.add_argument("--split", help="split to evaluate (default: data.val_split)")


def run(args: argparse.Namespace) -> int:
    evaluation = evaluate_checkpoint(trained_model(args), not args.no_progress, split_in_result=True)
    result, e = evaluation.result, evaluation.cfg.eval
    if evaluation.printable:
        print(f"mIoU {100 * result.miou:.2f}  ({result.split}, {evaluation.images} images, scales "
              f"{list(e.scales)}, flip {e.flip}, window {e.window})")
        for name, iou in result.iou.items():
            print(f"  {name:14s} {'   n/a' if iou is None else f'{100 * iou:6.2f}'}")
        if evaluation.recorded:
            print(f"recorded in {evaluation.metrics_path}")
    return 0

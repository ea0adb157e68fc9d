"""``ifbf score``: per-class IoU and mIoU of labelId prediction PNGs against Cityscapes gtFine (no torch)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ifbf.engine.score import score
from ifbf.errors import ScoreError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", type=Path, default=os.environ.get("CITYSCAPES_DATASET"),
                        help="Cityscapes root holding gtFine/ (default: $CITYSCAPES_DATASET)")
    parser.add_argument("--split", default="val", help="split (default: %(default)s)")
    parser.add_argument("--pred", type=Path, required=True, help="folder of labelId PNGs <city>_<seq>_<frame>*.png")
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")


def run(args: argparse.Namespace) -> int:
    if args.gt is None:
        raise ScoreError("give --gt ROOT or set CITYSCAPES_DATASET")
    result = score(Path(args.gt), args.split, args.pred, args.workers)
    for name, iou in result["iou"].items():
        print(f"{name:14s} {'   nan' if iou is None else f'{100 * iou:6.2f}'}")
    print(f"{'mIoU':14s} {100 * result['miou']:6.2f}   ({result['images']} images)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    sys.stdout.flush()
    return 0

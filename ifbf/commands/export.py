"""``ifbf export``: write test-server labelId PNGs for a run (optionally zipped for upload)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ifbf.commands.evaluate import add_inference_arguments, trained_model
from ifbf.engine.export import export_predictions, zip_submission


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_inference_arguments(parser)
    parser.add_argument("--split", default="test", help="split to predict (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the PNGs")
    parser.add_argument("--zip", action="store_true", help="also write OUT.zip for upload")


def run(args: argparse.Namespace) -> int:
    count = export_predictions(trained_model(args), args.split, args.out, not args.no_progress)
    print(f"wrote {count} labelId PNGs to {args.out}")
    if args.zip:
        print(f"zipped to {zip_submission(args.out)}")
    return 0

"""``ifbf visualize``: the paper's Figure 6 (predictions) and Figure 5 (what the balanced fusion does).

    ifbf visualize predictions --run RUN_DIR [--compare RUN_DIR_B] --split val --n 8 --out DIR
    ifbf visualize features --run RUN_DIR --image FILE --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ifbf.engine.visualize import features, predictions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="{predictions,features}")
    p = sub.add_parser("predictions", help="input, ground truth and prediction side by side (Figure 6)")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--compare", help="a second run directory: mark where the two predictions differ")
    p.add_argument("--split", default="val")
    p.add_argument("--n", type=int, default=8, help="number of images (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True)
    f = sub.add_parser("features", help="low-level, deep, concatenated and balanced features (Figure 5)")
    f.add_argument("--run", required=True, help="run directory")
    f.add_argument("--image", type=Path, required=True, help="an RGB image (e.g. a leftImg8bit PNG)")
    f.add_argument("--out", type=Path, required=True)


def run(args: argparse.Namespace) -> int:
    if args.what == "predictions":
        paths = predictions(args.run, args.out, args.split, args.n, args.compare)
    else:
        paths = features(args.run, args.image, args.out)
    for path in paths:
        print(f"wrote {path}")
    return 0

"""``ifbf visualize``: the paper's Figure 6 (predictions, any run) and IFBFNet's Figure 5 (what the balanced fusion
does; runs of model.arch=ifbfnet).

    ifbf visualize predictions --run RUN_DIR [--compare RUN_DIR_B] --split val --n 8 --out DIR
    ifbf visualize features --run RUN_DIR --image FILE --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ifbf.engine.visualize import features, predictions
from ifbf.errors import IfbfError
from ifbf.experiments import load_paper, load_preset, load_table, papers, presets, row_config
from ifbf.experiments import row_label as table_row_label
from ifbf.identity import config_hash
from ifbf.store.rundir import RunDir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="{predictions,features}")
    p = sub.add_parser("predictions", help="input, ground truth and prediction side by side (Figure 6)")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--compare", help="a second run directory: mark where the two predictions differ")
    p.add_argument("--split", default="val")
    p.add_argument("--n", type=int, default=8, help="number of images (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--label", help="title of --run's panel (default: its table row, found from the run's hash)")
    p.add_argument("--compare-label", help="title of --compare's panel (default: likewise)")
    f = sub.add_parser("features", help="low-level, deep, concatenated and balanced features (IFBFNet's Figure 5: "
                                        "runs of model.arch=ifbfnet)")
    f.add_argument("--run", required=True, help="run directory")
    f.add_argument("--image", type=Path, required=True, help="an RGB image (e.g. a leftImg8bit PNG)")
    f.add_argument("--out", type=Path, required=True)


def run(args: argparse.Namespace) -> int:
    if args.what == "predictions":
        labels = (args.label or row_label(args.run),
                  args.compare_label or (row_label(args.compare) if args.compare else None))
        paths = predictions(args.run, args.out, args.split, args.n, args.compare, labels)
    else:
        paths = features(args.run, args.image, args.out)
    for path in paths:
        print(f"wrote {path}")
    return 0


def row_label(run: str | Path) -> str | None:
    """The table rows a run directory of ``results/[<paper>/]<preset>/runs/<hash>`` trains, e.g. "T2 R101
    IFBFNet", found by recomputing the rows' config hashes under that preset of each paper that has it (None
    when none matches: a run of ``ifbf train``, or one planned with extra overrides)."""
    path = Path(run).resolve()
    try:
        seed = RunDir(path).config().train.seed
    except (IfbfError, OSError):
        return None
    names = []
    for paper in papers():
        if path.parent.parent.name not in presets(paper):
            continue
        preset = load_preset(path.parent.parent.name, paper)
        names += [table_row_label(number, row.name, paper) for number in load_paper(paper).tables
                  for row in load_table(number, paper).runnable()
                  if config_hash(row_config(row, preset, (f"train.seed={seed}",))) == path.name]
    if not names:
        return None
    return " = ".join(names[:2]) + (f" (+{len(names) - 2} rows)" if len(names) > 2 else "")

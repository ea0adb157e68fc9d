"""``ifbf synth``: write the embedded synthetic dataset (Cityscapes layout) to a folder."""

from __future__ import annotations

import argparse

from ifbf.data.synth import SynthSpec, write_dataset
from ifbf.errors import IfbfError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SynthSpec()
    parser.add_argument("--out", required=True, help="output folder (Cityscapes layout)")
    for name in ("train", "val", "test"):
        parser.add_argument(f"--{name}", type=int, default=getattr(d, name), help=f"{name} images (default %(default)s)")
    parser.add_argument("--height", type=int, default=d.height, help="image height (default %(default)s)")
    parser.add_argument("--width", type=int, default=d.width, help="image width (default %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    if min(args.height, args.width) < 32 or min(args.train, args.val, args.test) < 0:
        raise IfbfError("--height and --width must be >= 32 and image counts >= 0")
    spec = SynthSpec(args.train, args.val, args.test, args.height, args.width, args.seed)
    out = write_dataset(args.out, spec)
    print(f"wrote {spec.train}/{spec.val}/{spec.test} train/val/test images of {spec.height}x{spec.width} to {out}")
    return 0

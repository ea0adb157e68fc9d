"""``ifbf weights fetch|check``: ImageNet weights per backbone (ifbf.models.weights)."""

from __future__ import annotations

import argparse
from typing import get_args

from ifbf.config import Backbone, Stem
from ifbf.errors import IfbfError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download ImageNet weights into torch's cache; print path and sha256")
    fetch.add_argument("backbone", choices=["resnet50", "resnet101"])
    fetch.add_argument("--variant", default="IMAGENET1K_V1",
                       help="a torchvision weights name (IMAGENET1K_V1, IMAGENET1K_V2) or a deep stem: "
                            "deep (CCNet / MIT weights), deep_v1c (mmsegmentation); default IMAGENET1K_V1")
    check = sub.add_parser("check", help="say what a weights file is, its sha256, and whether it loads")
    check.add_argument("file")
    check.add_argument("--backbone", choices=get_args(Backbone), help="try loading it into this backbone")
    check.add_argument("--stem", choices=get_args(Stem), help="with --backbone (default: the file's own stem)")


def run(args: argparse.Namespace) -> int:
    # Imported here: torch and torchvision take seconds, and `ifbf weights --help` needs neither.
    from ifbf.models.weights import describe_weights, fetch_weights

    if args.action == "fetch":
        path, digest = fetch_weights(args.backbone, args.variant)
        key = args.backbone if args.variant not in get_args(Stem) else f"{args.backbone}_{args.variant}"
        print(f"path:   {path}\nsha256: {digest}\nuse:    --weights {key}={path}   (or model.weights.{key}=...)")
        return 0
    text = describe_weights(args.file, args.backbone, args.stem)
    print(text)
    if args.backbone and "loads:    NO" in text:
        raise IfbfError(f"{args.file} does not load into {args.backbone} (see above)")
    return 0

"""``ifbf data cache ROOT``: decode a Cityscapes root's splits once into memory-mappable uint8 arrays.

With ``data.fast_path=true`` (the paper preset) training then reads frames from the cache instead of
decoding two PNGs per sample; batches are bit for bit the same. Resumable: rerun the same command after
an interruption. See ifbf/data/cache.py for the layout and docs/performance.md for the disk cost.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

from ifbf.data.cache import CACHE_DIRNAME, cache_root, write_cache
from ifbf.errors import IfbfError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="Cityscapes root (the folder holding leftImg8bit/ and gtFine/)")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to cache (default: train val)")
    parser.add_argument("--out", default=None,
                        help=f"cache folder (default ROOT/{CACHE_DIRNAME}; then set data.cache_dir to it)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def needed_bytes(root: Path, splits: list[str], out: Path) -> int:
    """Bytes the cache still needs: 4 per pixel (RGB + label) of every frame, minus what is already written."""
    total = 0
    for split in splits:
        images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        if images:
            with Image.open(images[0]) as first:  # reads the header only
                total += len(images) * first.width * first.height * 4
    return total - sum(f.stat().st_size for f in out.glob("*/*.npy"))


def check_space(out: Path, need: int) -> None:
    """Refuse early when the disk cannot hold the cache (a full disk mid-write leaves a useless file)."""
    probe = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(probe).free
    if free < need:
        raise IfbfError(f"{probe} has {free / 2**30:.1f} GiB free but the cache needs {need / 2**30:.1f} GiB "
                        "more; choose another place with --out")


def run(args: argparse.Namespace) -> int:
    root = Path(args.root).expanduser()
    if not (root / "leftImg8bit").is_dir():
        raise IfbfError(f"{root} is not a Cityscapes root (no leftImg8bit/ in it); pass the folder holding "
                        "leftImg8bit/ and gtFine/")
    out = cache_root(root, args.out)
    check_space(out, needed_bytes(root, args.splits, out))
    for folder in write_cache(root, args.splits, out, progress=not args.quiet):
        print(f"{folder}: done")
    if args.out:
        print(f"train with data.cache_dir={out} (and data.fast_path=true, as the paper preset does)")
    return 0
